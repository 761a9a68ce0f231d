// The dashboard's words in English and Korean. The language is the browser's (Korean for a
// Korean browser, English otherwise), or the one chosen with the switch in the header, which is
// kept in localStorage; `?lang=ko` or `?lang=en` in the URL chooses (and is kept) too. The Korean words are the
// Korean tutorial's (docs/tutorial/ko), so a reader finds on the page what the chapter names.
"use strict";

const LANG = (() => {
  const inUrl = new URLSearchParams(location.search).get("lang");
  if (inUrl) localStorage.setItem("lang", inUrl);
  const asked = inUrl || localStorage.getItem("lang") || navigator.language || "en";
  return asked.toLowerCase().startsWith("ko") ? "ko" : "en";
})();

// English text (with {0}, {1} for what is filled in) -> Korean.
const KO = {
  // header and views
  "Saga lab": "사가 랩",
  "Chain": "체인",
  "Orders": "주문",
  "Topics": "토픽",
  "Consumer groups": "컨슈머 그룹",
  "DLQ": "DLQ",
  "Brokers": "브로커",
  "Schemas": "스키마",
  "connecting…": "연결 중…",
  "live": "연결됨",
  "reconnecting…": "다시 연결 중…",
  // the chain
  "The event chain": "이벤트 체인",
  "Each box is a service with its own database; each lane is a topic, a log on the broker. A filled dot is where a service publishes (through its outbox), a ring where its consumer group reads. Events move along the lanes as they happen. Lag is how far a group's committed offsets are behind the end of its topics, in records and in time (how long ago the oldest record it has not processed was written); the outbox is what a service has committed but not yet published.":
    "상자 하나는 자기 데이터베이스를 가진 서비스이고, 가로줄 하나는 토픽, 곧 브로커의 로그입니다. 채운 점은 서비스가 (아웃박스를 거쳐) 발행하는 곳, 빈 고리는 그 컨슈머 그룹이 읽는 곳입니다. 이벤트는 일어나는 대로 줄을 따라 움직입니다. 랙은 그룹의 커밋된 오프셋이 토픽의 끝에서 얼마나 뒤처졌는지를 레코드 수와 시간(아직 처리하지 않은 가장 오래된 레코드가 얼마나 전에 쓰였는지)으로 보여 줍니다. 아웃박스는 서비스가 커밋했지만 아직 발행하지 않은 이벤트입니다.",
  "the happy path": "정상 경로",
  "failure and compensation": "실패와 보상",
  "dead-lettered": "DLQ로 감",
  "Consumer lag per group": "그룹별 컨슈머 랙",
  "Seconds behind per group": "그룹별 뒤처진 시간(초)",
  "Events per second per topic": "토픽별 초당 이벤트",
  "Saga end-to-end latency": "사가 전체 지연 시간",
  "running": "실행 중",
  "stopped": "멈춤",
  "not started": "시작 전",
  "handlers fail": "핸들러 실패",
  "handlers work": "핸들러 정상",
  "slow {0} ms": "이벤트마다 {0} ms 지연",
  "lag {0}": "랙 {0}",
  "· {0} behind": "· {0} 뒤처짐",
  "{0} behind": "{0} 뒤처짐",
  "outbox {0} pending": "아웃박스 {0}개 대기",
  "{0} records · {1}/s": "레코드 {0}개 · 초당 {1}",
  "{0} record · {1}/s": "레코드 {0}개 · 초당 {1}",
  "{0} sagas (ms from order.created to the last event): p50 {1}, p95 {2}, p99 {3}, max {4}. Green: confirmed, red: cancelled.":
    "사가 {0}개 (order.created부터 마지막 이벤트까지 ms): p50 {1}, p95 {2}, p99 {3}, 최대 {4}. 초록: 확정, 빨강: 취소.",
  "No saga has finished yet: place an order.": "아직 끝난 사가가 없습니다. 주문을 넣어 보세요.",
  "more": "그 이상",
  // the controls
  "Place an order": "주문 넣기",
  "Happy path": "정상 경로",
  "Unpaid": "결제 실패",
  "Sold out": "품절",
  "alice has the money, LATTE is in stock: CONFIRMED": "alice는 돈이 있고 LATTE는 재고가 있다: CONFIRMED",
  "bob holds 10,000 won, three mochas cost 16,500: CANCELLED by payment": "bob은 10,000원, 모카 세 잔은 16,500원: 결제에서 CANCELLED",
  "ICED_TEA has no stock: charged, then refunded (compensation)": "ICED_TEA는 재고가 없다: 결제 후 환불(보상 트랜잭션)",
  "Services": "서비스",
  "Stop": "멈춤",
  "Start": "시작",
  "no delay": "지연 없음",
  "Poison": "포이즌",
  "garbage bytes": "엉터리 바이트",
  "invalid JSON event": "잘못된 JSON 이벤트",
  "Publish": "발행",
  "follow its saga": "사가 따라가기",
  "order {0} placed: ": "주문 {0} 접수: ",
  // orders
  "The order service's view, newest first. Open one to see its saga: every event with its topic, partition and offset, and what caused it.":
    "주문 서비스가 보는 주문, 최신순. 하나를 열면 그 사가가 나옵니다. 이벤트마다 토픽, 파티션, 오프셋, 그리고 무엇이 그것을 일으켰는지.",
  "Filter by status": "상태로 거르기",
  "All": "전체",
  "← orders": "← 주문",
  "Order ": "주문 ",
  "The saga, one lane per service": "사가, 서비스마다 줄 하나",
  "time": "시간",
  "compensation": "보상",
  "partition {0} · offset {1}": "파티션 {0} · 오프셋 {1}",
  " · caused by {0} …{1}": " · 원인 {0} …{1}",
  " · caused by …{0}": " · 원인 …{0}",
  "+{0} ms after its cause": "원인보다 {0} ms 뒤",
  "Each event sits in the lane of the service that published it. Time is from order.created; \"+ms\" is the time since the event that caused it (ce_causationid). Compensation events are amber; dead-lettered copies red.":
    "이벤트는 그것을 발행한 서비스의 줄에 놓입니다. 시간은 order.created부터 잰 것이고, \"원인보다 … ms 뒤\"는 그 이벤트를 일으킨 이벤트(ce_causationid)로부터 걸린 시간입니다. 보상 이벤트는 주황색, DLQ로 간 사본은 빨간색입니다.",
  "order": "주문",
  "customer": "고객",
  "total": "합계",
  "status": "상태",
  "reason": "사유",
  "created": "생성",
  "records": "레코드",
  "size": "크기",
  "leader": "리더",
  "epoch": "에포크",
  "replicas": "레플리카",
  "node": "노드",
  "address": "주소",
  "role": "역할",
  "leads": "리더 수",
  // topics and messages
  "Every topic on the broker, read through the Kafka protocol. A topic is split into partitions; each partition is a log whose records keep their offsets from the log start (earliest) to the end (latest). Records stay after they are read: consumers only move their offsets.":
    "브로커의 모든 토픽을 카프카 프로토콜로 읽었습니다. 토픽은 파티션으로 나뉘고, 파티션 하나는 레코드가 로그 시작(earliest)부터 끝(latest)까지 제 오프셋을 지키는 로그입니다. 레코드는 읽힌 뒤에도 남습니다. 컨슈머는 자기 오프셋만 옮깁니다.",
  "← topics": "← 토픽",
  "Topic ": "토픽 ",
  "Partitions": "파티션",
  "Configs": "설정",
  "Messages": "메시지",
  "Load": "불러오기",
  "follow live": "실시간으로 따라가기",
  "isolation level": "격리 수준",
  "as": "읽는 방식",
  "start from": "시작 위치",
  "the latest 20": "최근 20개",
  "offset or time": "오프셋 또는 시각",
  "No records there.": "거기에는 레코드가 없습니다.",
  "Produce a record": "레코드 쓰기",
  "Produce": "쓰기",
  "key (optional)": "키 (선택)",
  "partition by key": "키로 파티션 정하기",
  "partition to produce to": "쓸 파티션",
  "headers, one per line: name: value": "헤더, 한 줄에 하나: 이름: 값",
  "no headers": "헤더 없음",
  "(no value)": "(값 없음)",
  "(none)": "(없음)",
  "read_committed shows only committed transactions and stops at the last stable offset; read_uncommitted shows every record, aborted ones too":
    "read_committed는 커밋된 트랜잭션만 보여 주고 LSO(last stable offset)에서 멈춥니다. read_uncommitted는 중단된 것까지 모든 레코드를 보여 줍니다",
  // consumer groups
  "A group shares the partitions of its topics among its members (rebalancing when one joins or leaves) and commits how far it has read. Each service is one group; its consumers are the members. Lag is the records between a group's committed offset and the end of the log; behind is how long ago the oldest of them was written.":
    "그룹은 토픽의 파티션을 멤버들에게 나눠 주고(멤버가 들어오거나 나가면 리밸런싱), 어디까지 읽었는지 커밋합니다. 서비스 하나가 그룹 하나이고, 그 컨슈머들이 멤버입니다. 랙은 그룹의 커밋된 오프셋과 로그 끝 사이의 레코드, 뒤처짐은 그중 가장 오래된 것이 얼마나 전에 쓰였는지입니다.",
  "group": "그룹",
  "state": "상태",
  "members": "멤버",
  "lag": "랙",
  "behind": "뒤처짐",
  "← consumer groups": "← 컨슈머 그룹",
  "Group ": "그룹 ",
  "Members": "멤버",
  "client id": "클라이언트 ID",
  "host": "호스트",
  "partitions": "파티션",
  "No active member.": "활성 멤버가 없습니다.",
  "Reset offsets (reprocessing)": "오프셋 되돌리기 (재처리)",
  "Moving a group's committed offsets back makes it read those records again when it next runs; moving them forward skips records. Kafka allows it only while the group has no active member, so stop the service first. The services are idempotent consumers: every event id they applied is in their consumed_events table, so a replayed event is recognised as a duplicate and changes nothing (no second charge, no second reservation).":
    "그룹의 커밋된 오프셋을 뒤로 옮기면 다음에 돌 때 그 레코드를 다시 읽고, 앞으로 옮기면 레코드를 건너뜁니다. 카프카는 그룹에 활성 멤버가 없을 때만 이것을 허락하므로 먼저 서비스를 멈추세요. 서비스들은 멱등 컨슈머입니다. 적용한 이벤트 ID가 모두 consumed_events 테이블에 있으므로, 다시 온 이벤트는 중복으로 알아보고 아무것도 바꾸지 않습니다(두 번 결제하지 않고, 두 번 예약하지 않습니다).",
  "This group is {0}:": "이 그룹은 {0}입니다:",
  "Stop {0}": "{0} 멈춤",
  "Start {0}": "{0} 시작",
  "to": "위치",
  "topic": "토픽",
  "every topic": "모든 토픽",
  "earliest": "earliest",
  "latest": "latest",
  "a time": "시각",
  "offset": "오프셋",
  "Reset offsets": "오프셋 되돌리기",
  "{0} member(s) are active: stop the group's consumers first, then reset.": "활성 멤버가 {0}입니다. 먼저 그룹의 컨슈머를 멈춘 뒤 되돌리세요.",
  "Moved: ": "옮김: ",
  ". Start the service to see it re-read them.": ". 서비스를 시작하면 다시 읽는 것을 볼 수 있습니다.",
  "Offsets and lag per partition": "파티션별 오프셋과 랙",
  "partition": "파티션",
  "owner": "담당",
  "committed": "커밋됨",
  "log end": "로그 끝",
  // dead-letter queues
  "Dead-letter queues": "데드 레터 큐(DLQ)",
  "A record a service can never process (not JSON, a payload that breaks a rule, a handler that keeps failing) is published to <topic>.dlq with headers that say where it came from, which consumer group gave up on it and why, so its partition is never blocked. Replay is a redrive: once the cause is fixed, each waiting record goes back to its original topic addressed to the group that dead-lettered it (header dlq_redrive_group), and only that group processes it again; the other groups skip it. The consumer group dlq-replay commits how far replay has gone, so a replayed record is marked replayed and is never sent twice.":
    "서비스가 결코 처리할 수 없는 레코드(JSON이 아니거나, 규칙을 어기는 페이로드이거나, 핸들러가 계속 실패하는 경우)는 어디서 왔는지, 어느 컨슈머 그룹이 왜 포기했는지 적은 헤더와 함께 <topic>.dlq로 발행되므로, 그 파티션은 막히지 않습니다. 재처리는 되돌려 보내기(redrive)입니다. 원인을 고친 뒤 기다리던 레코드마다 그것을 포기한 그룹 앞으로(헤더 dlq_redrive_group) 원래 토픽에 돌려보내고, 그 그룹만 다시 처리하며 다른 그룹은 건너뜁니다. 컨슈머 그룹 dlq-replay가 재처리가 어디까지 갔는지 커밋하므로, 재처리한 레코드는 replayed로 표시되고 두 번 보내지지 않습니다.",
  "{0} record(s), {1} waiting": "레코드 {0}개, {1}개 대기",
  "Replay all waiting": "대기 중인 것 모두 재처리",
  "Send every waiting record back to the group that dead-lettered it": "대기 중인 레코드를 모두 그것을 포기한 그룹에게 돌려보냅니다",
  "Replay": "재처리",
  "Replay {0}'s": "{0}의 것 재처리",
  "Send the waiting records this group dead-lettered back to it": "이 그룹이 포기해 기다리는 레코드를 그 그룹에게 돌려보냅니다",
  "key": "키",
  "key ": "키 ",
  "value": "값",
  "Send this record back to its group": "이 레코드를 그룹에게 돌려보냅니다",
  "at": "위치",
  "from": "출처",
  "attempts": "시도",
  "error": "오류",
  "waiting": "대기",
  "replayed": "재처리됨",
  "replayed {0} record(s) of {1}": "{1}의 레코드 {0}개를 재처리했습니다",
  // brokers
  "Every partition has one leader, which takes the writes and serves the reads, and followers that copy it. The replicas that are caught up form the ISR (in-sync replicas); a write with acks=all is acknowledged once every one of them has it, and needs at least min.insync.replicas of them. The controller, elected by the nodes' Raft quorum (KRaft), fences a node that stops and gives each partition it led to another replica of the ISR, at a higher leader epoch. Stop a node and watch its partitions move and the ISRs shrink; start it again and watch it catch up and rejoin them. Isolate a node instead (a network partition: it keeps running, cut off from the others and from every client) and it is fenced the same way; reconnected, it cuts off what only it wrote and catches up.":
    "파티션마다 쓰기를 받고 읽기를 내주는 리더가 하나 있고, 그것을 복제하는 팔로워가 있습니다. 따라잡은 복제본들이 ISR(in-sync replicas)을 이룹니다. acks=all인 쓰기는 그 모두가 가진 뒤에 확인되고, 최소 min.insync.replicas개가 있어야 합니다. 노드들의 Raft 쿼럼(KRaft)이 뽑은 컨트롤러는 멈춘 노드를 펜싱하고, 그 노드가 이끌던 파티션을 ISR의 다른 복제본에게 더 높은 리더 에포크로 넘깁니다. 노드를 멈추고 파티션이 옮겨 가며 ISR이 줄어드는 것을 보세요. 다시 시작하면 따라잡고 ISR에 다시 듭니다. 대신 노드를 떼어 내면(네트워크 분할: 노드는 돌고 있지만 다른 노드와 모든 클라이언트에게서 잘립니다) 똑같이 펜싱되고, 다시 붙이면 자기만 쓴 것을 잘라 내고 따라잡습니다.",
  "Nodes": "노드",
  "Isolate": "떼어 내기",
  "Reconnect": "다시 붙이기",
  "in sync": "동기화됨",
  "isolated from the other nodes": "다른 노드에게서 떨어짐",
  "Replicas in bold lead; replicas struck through are out of the ISR.": "굵은 글씨 복제본이 리더, 줄 그은 복제본은 ISR 밖입니다.",
  "The lab runs its broker as one node. Start it with --nodes 3 to run a three-node cluster: every topic on three replicas.":
    "랩은 브로커를 노드 하나로 돌리고 있습니다. --nodes 3으로 시작하면 노드 세 개짜리 클러스터가 되고, 모든 토픽이 복제본 세 개를 가집니다.",
  // schemas
  "The events' JSON Schemas in the lab's schema registry, generated by the services from their event types and registered at start: one subject per topic (<topic>-value), its versions, each version's id (the one records carry in their first five bytes) and the subject's compatibility level. Choose a subject to compare two of its versions.":
    "랩 스키마 레지스트리에 있는 이벤트의 JSON Schema입니다. 서비스가 이벤트 타입에서 만들어 시작할 때 등록합니다. 토픽마다 subject(<topic>-value) 하나, 그 버전들, 버전마다의 ID(레코드가 앞 다섯 바이트에 싣는 그 ID), subject의 호환성 수준을 보여 줍니다. subject를 고르면 두 버전을 비교합니다.",
  "Registry: {0} (Confluent's REST API)": "레지스트리: {0} (Confluent REST API)",
  "subject": "subject",
  "level": "수준",
  "versions": "버전",
  "from ": "이전 ",
  "to ": "이후 ",
  "The schema of the second version": "이후 버전의 스키마",
  "schema v{0} (id {1})": "스키마 v{0} (id {1})",
};

/// The text in the page's language; `{0}`, `{1}`, ... are replaced by `args`.
function tr(text, ...args) {
  let out = LANG === "ko" && KO[text] !== undefined ? KO[text] : text;
  args.forEach((a, i) => { out = out.split(`{${i}}`).join(String(a)); });
  return out;
}

/// Switches the page's language (and remembers it).
function setLang(lang) {
  localStorage.setItem("lang", lang);
  const url = new URL(location.href);
  if (url.searchParams.has("lang")) {
    url.searchParams.delete("lang");
    location.replace(url.toString());
  } else {
    // The same URL: only a reload loads the page again (replacing it would only move to its
    // fragment).
    location.reload();
  }
}
