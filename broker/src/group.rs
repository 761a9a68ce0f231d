//! `GroupCoordinator`: consumer groups with the classic rebalance protocol.
//!
//! The state machine (see `docs/broker-groups.md`):
//! ```text
//!            join                    all members joined / rebalance timeout
//!  Empty ──────────▶ PreparingRebalance ─────────────────────▶ CompletingRebalance
//!    ▲                    ▲      ▲                                   │ leader's SyncGroup
//!    │ last member leaves │      └──── join, leave, session expiry ──┤
//!    └────────────────────┴──────────── join, leave, session expiry ◀── Stable
//! ```
//! Each state carries the data that only means something in it (`State`): the rebalance
//! deadline in PreparingRebalance and CompletingRebalance, the initial delay of a new group in
//! PreparingRebalance, the leader and chosen protocol from CompletingRebalance on (kept through
//! the next PreparingRebalance, where the leader is preferred again and DescribeGroups still
//! shows the protocol). What DescribeGroups and ListGroups report is `GroupState`, derived from it.
//!
//! Requests that must wait (JoinGroup until the rebalance completes, SyncGroup until the leader
//! sends the assignment) park a oneshot sender in the member; whoever completes the step answers
//! them all. A ticker (`tick`) expires sessions and rebalance deadlines.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::ResponseError;
use tokio::sync::oneshot;

/// Group states, named as in Kafka's DescribeGroups answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
}

impl GroupState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Empty => "Empty",
            Self::PreparingRebalance => "PreparingRebalance",
            Self::CompletingRebalance => "CompletingRebalance",
            Self::Stable => "Stable",
        }
    }
}

/// What a JoinGroup asks for.
#[derive(Debug)]
pub struct JoinRequest {
    pub group_id: String,
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
    pub protocol_type: String,
    /// (name, metadata) in the member's order of preference.
    pub protocols: Vec<(String, Bytes)>,
    /// JoinGroup v4+: a new member first gets MEMBER_ID_REQUIRED and its id.
    pub require_known_member_id: bool,
}

/// The answer to a JoinGroup.
#[derive(Debug, Clone, Default)]
pub struct JoinResult {
    pub error: Option<ResponseError>,
    pub generation_id: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// Only for the leader: every member's id, instance id and metadata for the chosen protocol.
    pub members: Vec<(String, Option<String>, Bytes)>,
    /// A static leader that took over its place in a stable group: the assignment stands, the
    /// leader must not compute a new one (JoinGroup v9, KIP-814).
    pub skip_assignment: bool,
}

impl JoinResult {
    fn failed(error: ResponseError, member_id: &str) -> Self {
        JoinResult {
            error: Some(error),
            generation_id: -1,
            member_id: member_id.to_string(),
            ..Default::default()
        }
    }
}

/// Where a JoinGroup stands once the group has looked at it.
enum Admission {
    /// It goes on (and waits for the rebalance) as this member.
    Member(String),
    /// It is answered now.
    Answer(JoinResult),
}

/// The answer to a SyncGroup.
#[derive(Debug, Clone, Default)]
pub struct SyncResult {
    pub error: Option<ResponseError>,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Bytes,
}

/// A member as DescribeGroups shows it.
#[derive(Debug, Clone)]
pub struct MemberDescription {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub metadata: Bytes,
    pub assignment: Bytes,
}

/// A group as DescribeGroups shows it.
#[derive(Debug, Clone)]
pub struct GroupDescription {
    pub state: GroupState,
    pub protocol_type: String,
    pub protocol: String,
    pub members: Vec<MemberDescription>,
}

#[derive(Debug)]
struct Member {
    id: String,
    group_instance_id: Option<String>,
    client_id: String,
    client_host: String,
    session_timeout: Duration,
    rebalance_timeout: Duration,
    protocols: Vec<(String, Bytes)>,
    assignment: Bytes,
    /// Last sign of life (join, sync, heartbeat, commit).
    last_seen: Instant,
    /// A JoinGroup waiting for the rebalance to complete.
    awaiting_join: Option<oneshot::Sender<JoinResult>>,
    /// A SyncGroup waiting for the leader's assignment.
    awaiting_sync: Option<oneshot::Sender<SyncResult>>,
}

/// A group's state with the data that only means something in that state.
#[derive(Debug)]
enum State {
    Empty,
    PreparingRebalance {
        /// When members that haven't rejoined are dropped.
        deadline: Instant,
        /// A new group waits this long for more members before its first generation.
        initial_delay_until: Option<Instant>,
        /// The previous generation's leader, kept if it rejoins (`None` for a new group, or
        /// once it left).
        leader: Option<String>,
        /// The previous generation's protocol, still reported by DescribeGroups.
        protocol: Option<String>,
    },
    CompletingRebalance {
        /// When members that haven't sent SyncGroup are dropped.
        deadline: Instant,
        /// The member that sends the assignment.
        leader: String,
        protocol: Option<String>,
    },
    Stable {
        leader: String,
        protocol: Option<String>,
    },
}

impl State {
    /// The state as DescribeGroups and ListGroups report it.
    fn public(&self) -> GroupState {
        match self {
            Self::Empty => GroupState::Empty,
            Self::PreparingRebalance { .. } => GroupState::PreparingRebalance,
            Self::CompletingRebalance { .. } => GroupState::CompletingRebalance,
            Self::Stable { .. } => GroupState::Stable,
        }
    }

    /// The chosen protocol: this generation's, or while rebalancing the previous one's.
    fn protocol(&self) -> Option<&str> {
        match self {
            Self::Empty => None,
            Self::PreparingRebalance { protocol, .. }
            | Self::CompletingRebalance { protocol, .. }
            | Self::Stable { protocol, .. } => protocol.as_deref(),
        }
    }

    /// The leader: this generation's, or while rebalancing the previous one's.
    fn leader(&self) -> Option<&str> {
        match self {
            Self::Empty => None,
            Self::PreparingRebalance { leader, .. } => leader.as_deref(),
            Self::CompletingRebalance { leader, .. } | Self::Stable { leader, .. } => Some(leader),
        }
    }

    /// When the current rebalance step gives up on members that haven't answered.
    fn deadline(&self) -> Option<Instant> {
        match self {
            Self::PreparingRebalance { deadline, .. }
            | Self::CompletingRebalance { deadline, .. } => Some(*deadline),
            Self::Empty | Self::Stable { .. } => None,
        }
    }
}

#[derive(Debug)]
struct Group {
    state: State,
    generation: i32,
    protocol_type: Option<String>,
    /// Members in join order (the first is the default leader).
    members: Vec<Member>,
    /// Ids handed out with MEMBER_ID_REQUIRED that haven't joined yet, with when they lapse.
    pending_ids: HashMap<String, Instant>,
}

impl Member {
    /// A JoinGroup is parked and its client is still waiting for the answer.
    fn is_joining(&self) -> bool {
        self.awaiting_join
            .as_ref()
            .is_some_and(|tx| !tx.is_closed())
    }

    /// A SyncGroup is parked and its client is still waiting for the answer.
    fn is_syncing(&self) -> bool {
        self.awaiting_sync
            .as_ref()
            .is_some_and(|tx| !tx.is_closed())
    }

    /// A parked request keeps the member alive: its connection can't heartbeat meanwhile.
    fn is_expired(&self, now: Instant) -> bool {
        !self.is_joining()
            && !self.is_syncing()
            && now.duration_since(self.last_seen) > self.session_timeout
    }
}

impl Group {
    /// The member id a joining member goes on under, or the answer it gets now: a protocol
    /// the group does not share, a fenced static member, a new dynamic member that must learn
    /// its id first (KIP-394), an unknown id, or a restarted static member that takes its place
    /// back without a rebalance (KIP-345).
    fn admit(&mut self, req: &JoinRequest, now: Instant) -> Admission {
        let fail = |e: ResponseError| Admission::Answer(JoinResult::failed(e, &req.member_id));
        if !self.members.is_empty() {
            let same_type = self.protocol_type.as_deref() == Some(req.protocol_type.as_str());
            let shares_protocol = self.members.iter().all(|m| {
                m.protocols
                    .iter()
                    .any(|(n, _)| req.protocols.iter().any(|(rn, _)| rn == n))
            });
            if !same_type || !shares_protocol {
                return fail(ResponseError::InconsistentGroupProtocol);
            }
        }
        let instance = req.group_instance_id.as_deref();
        if !req.member_id.is_empty() {
            if self.is_fenced(&req.member_id, instance) {
                return fail(ResponseError::FencedInstanceId);
            }
            if self.has_member(&req.member_id) || self.pending_ids.remove(&req.member_id).is_some()
            {
                return Admission::Member(req.member_id.clone());
            }
            return fail(ResponseError::UnknownMemberId);
        }
        let id = format!("{}-{}", req.client_id, uuid::Uuid::new_v4());
        if let Some(old) = instance.and_then(|i| self.static_member(i)) {
            let old = old.to_owned();
            if let Some(answer) = self.replace_static_member(&old, req, &id, now) {
                return Admission::Answer(answer);
            }
            // Else it rejoins under its new id like any member (the group rebalances).
        } else if req.require_known_member_id && instance.is_none() {
            // A new dynamic member first learns its id (a static one needs no second round
            // trip, KIP-345); the id lapses if the member doesn't come back within its session
            // timeout.
            self.pending_ids
                .insert(id.clone(), now + req.session_timeout);
            return Admission::Answer(JoinResult::failed(ResponseError::MemberIdRequired, &id));
        }
        Admission::Member(id)
    }

    /// Records a joining member (new, or rejoining with new protocols and timeouts) as
    /// waiting for the rebalance's answer on `answer`.
    fn register(
        &mut self,
        member_id: String,
        req: JoinRequest,
        answer: oneshot::Sender<JoinResult>,
        now: Instant,
    ) {
        if let Some(m) = self.member(&member_id) {
            m.protocols = req.protocols;
            m.session_timeout = req.session_timeout;
            m.rebalance_timeout = req.rebalance_timeout;
            m.last_seen = now;
            m.awaiting_join = Some(answer);
        } else {
            self.members.push(Member {
                id: member_id,
                group_instance_id: req.group_instance_id,
                client_id: req.client_id,
                client_host: req.client_host,
                session_timeout: req.session_timeout,
                rebalance_timeout: req.rebalance_timeout,
                protocols: req.protocols,
                assignment: Bytes::new(),
                last_seen: now,
                awaiting_join: Some(answer),
                awaiting_sync: None,
            });
        }
        self.protocol_type = Some(req.protocol_type);
    }

    /// A join starts a rebalance, or joins the one being prepared. A starting group waits
    /// `initial_delay` for the other members to join the same generation, each new member
    /// extending the wait up to the rebalance deadline.
    fn rebalance_for_join(&mut self, now: Instant, initial_delay: Duration) {
        match &mut self.state {
            State::Empty => {
                self.prepare_rebalance(now);
                if let State::PreparingRebalance {
                    initial_delay_until,
                    ..
                } = &mut self.state
                {
                    *initial_delay_until = Some(now + initial_delay);
                }
            }
            State::PreparingRebalance {
                deadline,
                initial_delay_until: Some(until),
                ..
            } => {
                *until = (now + initial_delay).min(*deadline);
            }
            State::PreparingRebalance { .. } => {}
            State::CompletingRebalance { .. } | State::Stable { .. } => self.prepare_rebalance(now),
        }
    }

    fn new() -> Self {
        Self {
            state: State::Empty,
            generation: 0,
            protocol_type: None,
            members: Vec::new(),
            pending_ids: HashMap::new(),
        }
    }

    fn member(&mut self, id: &str) -> Option<&mut Member> {
        self.members.iter_mut().find(|m| m.id == id)
    }

    fn has_member(&self, id: &str) -> bool {
        self.members.iter().any(|m| m.id == id)
    }

    /// The id of the member holding a static `instance` id (KIP-345).
    fn static_member(&self, instance: &str) -> Option<&str> {
        self.members
            .iter()
            .find(|m| m.group_instance_id.as_deref() == Some(instance))
            .map(|m| m.id.as_str())
    }

    /// A request from `member_id` naming a static `instance` that another member now holds:
    /// the sender is an older instance of a restarted member and is fenced (KIP-345).
    fn is_fenced(&self, member_id: &str, instance: Option<&str>) -> bool {
        instance
            .and_then(|i| self.static_member(i))
            .is_some_and(|holder| holder != member_id)
    }

    /// A static member that restarted (JoinGroup with its instance id and no member id) takes
    /// the place of its previous incarnation, whose parked requests are fenced, under a new
    /// member id: the same assignment, and in a stable group no rebalance. Kafka's rule
    /// (`GroupCoordinator`, KIP-345): only if its previous place was being assigned
    /// (CompletingRebalance) or the group's protocol would change does the group rebalance.
    /// `None` when the join goes on as any rejoin (parked until the rebalance completes).
    fn replace_static_member(
        &mut self,
        old_id: &str,
        req: &JoinRequest,
        new_id: &str,
        now: Instant,
    ) -> Option<JoinResult> {
        let chosen = self.state.protocol().map(str::to_owned);
        let m = self.member(old_id).expect("the caller found it");
        if let Some(tx) = m.awaiting_join.take() {
            let _ = tx.send(JoinResult {
                error: Some(ResponseError::FencedInstanceId),
                generation_id: -1,
                member_id: old_id.to_owned(),
                ..Default::default()
            });
        }
        if let Some(tx) = m.awaiting_sync.take() {
            let _ = tx.send(SyncResult {
                error: Some(ResponseError::FencedInstanceId),
                ..Default::default()
            });
        }
        m.id = new_id.to_owned();
        m.client_id.clone_from(&req.client_id);
        m.client_host.clone_from(&req.client_host);
        m.protocols.clone_from(&req.protocols);
        m.session_timeout = req.session_timeout;
        m.rebalance_timeout = req.rebalance_timeout;
        m.last_seen = now;
        let keeps_protocol = chosen
            .as_deref()
            .is_none_or(|c| req.protocols.iter().any(|(n, _)| n == c));
        match &mut self.state {
            State::PreparingRebalance { leader, .. } => {
                if leader.as_deref() == Some(old_id) {
                    *leader = Some(new_id.to_owned());
                }
                None
            }
            State::CompletingRebalance { leader, .. } | State::Stable { leader, .. }
                if leader == old_id =>
            {
                *leader = new_id.to_owned();
                self.answer_static_rejoin(new_id, keeps_protocol, now)
            }
            _ => self.answer_static_rejoin(new_id, keeps_protocol, now),
        }
    }

    /// After a static member's replacement: in a stable group whose protocol it still speaks,
    /// its JoinGroup is answered at once with the current generation; otherwise the group
    /// rebalances (`None`: the join is parked as usual).
    fn answer_static_rejoin(
        &mut self,
        member_id: &str,
        keeps_protocol: bool,
        now: Instant,
    ) -> Option<JoinResult> {
        let State::Stable { leader, protocol } = &self.state else {
            self.prepare_rebalance(now);
            return None;
        };
        if !keeps_protocol {
            self.prepare_rebalance(now);
            return None;
        }
        let is_leader = leader == member_id;
        let chosen = protocol.clone().unwrap_or_default();
        Some(JoinResult {
            error: None,
            generation_id: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol_name: protocol.clone(),
            leader: leader.clone(),
            member_id: member_id.to_owned(),
            members: if is_leader {
                self.roster(&chosen)
            } else {
                Vec::new()
            },
            skip_assignment: is_leader,
        })
    }

    /// Every member's id, instance id and metadata for `protocol`: what the leader assigns from.
    fn roster(&self, protocol: &str) -> Vec<(String, Option<String>, Bytes)> {
        self.members
            .iter()
            .map(|m| {
                let metadata = m
                    .protocols
                    .iter()
                    .find(|(name, _)| name == protocol)
                    .map(|(_, md)| md.clone())
                    .unwrap_or_default();
                (m.id.clone(), m.group_instance_id.clone(), metadata)
            })
            .collect()
    }

    /// Moves to PreparingRebalance; pending syncs learn a new rebalance started.
    fn prepare_rebalance(&mut self, now: Instant) {
        for m in &mut self.members {
            if let Some(tx) = m.awaiting_sync.take() {
                let _ = tx.send(SyncResult {
                    error: Some(ResponseError::RebalanceInProgress),
                    ..Default::default()
                });
            }
        }
        if matches!(self.state, State::PreparingRebalance { .. }) {
            return;
        }
        self.state = State::PreparingRebalance {
            deadline: now + self.longest_rebalance_timeout(),
            initial_delay_until: None,
            leader: self.state.leader().map(str::to_owned),
            protocol: self.state.protocol().map(str::to_owned),
        };
    }

    /// How long the slowest member may take to rejoin or sync.
    fn longest_rebalance_timeout(&self) -> Duration {
        self.members
            .iter()
            .map(|m| m.rebalance_timeout)
            .max()
            .unwrap_or_default()
    }

    fn remove_member(&mut self, id: &str, now: Instant) {
        self.members.retain(|m| m.id != id);
        if self.members.is_empty() {
            self.become_empty();
            return;
        }
        self.prepare_rebalance(now);
        if let State::PreparingRebalance { leader, .. } = &mut self.state
            && leader.as_deref() == Some(id)
        {
            *leader = None;
        }
    }

    fn become_empty(&mut self) {
        self.state = State::Empty;
        self.generation += 1;
    }

    /// Completes the join phase if everyone has rejoined (or `force` after the deadline).
    fn try_complete_join(&mut self, now: Instant, force: bool) {
        let State::PreparingRebalance {
            initial_delay_until,
            ..
        } = &self.state
        else {
            return;
        };
        if initial_delay_until.is_some_and(|t| now < t) && !force {
            return;
        }
        // A JoinGroup whose connection closed doesn't count as rejoined.
        for m in &mut self.members {
            if !m.is_joining() {
                m.awaiting_join = None;
            }
        }
        let all_joined = self.members.iter().all(|m| m.awaiting_join.is_some());
        if !all_joined && !force {
            return;
        }
        // Members that didn't rejoin in time are out.
        self.members.retain(|m| m.awaiting_join.is_some());
        if self.members.is_empty() {
            self.become_empty();
            return;
        }
        self.generation += 1;
        let protocol = choose_protocol(&self.members);
        let leader = match self.state.leader() {
            Some(l) if self.has_member(l) => l.to_owned(),
            _ => self.members[0].id.clone(),
        };
        let roster = self.roster(&protocol.clone().unwrap_or_default());
        for m in &mut self.members {
            m.last_seen = now;
            m.assignment = Bytes::new();
            if let Some(tx) = m.awaiting_join.take() {
                let _ = tx.send(JoinResult {
                    error: None,
                    generation_id: self.generation,
                    protocol_type: self.protocol_type.clone(),
                    protocol_name: protocol.clone(),
                    leader: leader.clone(),
                    member_id: m.id.clone(),
                    members: if m.id == leader {
                        roster.clone()
                    } else {
                        Vec::new()
                    },
                    skip_assignment: false,
                });
            }
        }
        self.state = State::CompletingRebalance {
            // The leader has this long to send the assignment.
            deadline: now + self.longest_rebalance_timeout(),
            leader,
            protocol,
        };
    }

    fn sync_result(&self, assignment: Bytes) -> SyncResult {
        SyncResult {
            error: None,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.state.protocol().map(str::to_owned),
            assignment,
        }
    }
}

/// The first protocol of the first member that every member supports.
fn choose_protocol(members: &[Member]) -> Option<String> {
    let first = members.first()?;
    first
        .protocols
        .iter()
        .map(|(name, _)| name)
        .find(|name| {
            members
                .iter()
                .all(|m| m.protocols.iter().any(|(n, _)| n == *name))
        })
        .cloned()
}

/// The coordinator of every group on this broker.
#[derive(Debug)]
pub struct GroupCoordinator {
    groups: Mutex<HashMap<String, Group>>,
    initial_rebalance_delay: Duration,
    min_session_timeout: Duration,
    max_session_timeout: Duration,
}

impl GroupCoordinator {
    pub fn new(
        initial_rebalance_delay: Duration,
        min_session: Duration,
        max_session: Duration,
    ) -> Self {
        Self {
            groups: Mutex::new(HashMap::new()),
            initial_rebalance_delay,
            min_session_timeout: min_session,
            max_session_timeout: max_session,
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Group>> {
        self.groups.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// JoinGroup: registers the member and waits until the rebalance completes.
    pub async fn join(&self, req: JoinRequest) -> JoinResult {
        if let Err(e) = self.check_join(&req) {
            return JoinResult::failed(e, &req.member_id);
        }
        let now = Instant::now();
        let rx = {
            let mut groups = self.lock();
            let group = groups
                .entry(req.group_id.clone())
                .or_insert_with(Group::new);
            let member_id = match group.admit(&req, now) {
                Admission::Member(id) => id,
                Admission::Answer(answer) => return answer,
            };
            let (tx, rx) = oneshot::channel();
            group.register(member_id, req, tx, now);
            group.rebalance_for_join(now, self.initial_rebalance_delay);
            group.try_complete_join(now, false);
            rx
        };
        rx.await
            .unwrap_or_else(|_| JoinResult::failed(ResponseError::RebalanceInProgress, ""))
    }

    /// What is wrong with a JoinGroup whatever the group's state.
    fn check_join(&self, req: &JoinRequest) -> Result<(), ResponseError> {
        if req.group_id.is_empty() {
            return Err(ResponseError::InvalidGroupId);
        }
        if req.session_timeout < self.min_session_timeout
            || req.session_timeout > self.max_session_timeout
        {
            return Err(ResponseError::InvalidSessionTimeout);
        }
        if req.protocols.is_empty() || req.protocol_type.is_empty() {
            return Err(ResponseError::InconsistentGroupProtocol);
        }
        Ok(())
    }

    /// SyncGroup: the leader hands out assignments; everyone waits for theirs.
    pub async fn sync(
        &self,
        group_id: &str,
        generation: i32,
        member_id: &str,
        instance: Option<&str>,
        assignments: Vec<(String, Bytes)>,
    ) -> SyncResult {
        let fail = |e: ResponseError| SyncResult {
            error: Some(e),
            ..Default::default()
        };
        let rx = {
            let mut groups = self.lock();
            let Some(group) = groups.get_mut(group_id) else {
                return fail(ResponseError::UnknownMemberId);
            };
            if group.is_fenced(member_id, instance) {
                return fail(ResponseError::FencedInstanceId);
            }
            if !group.has_member(member_id) {
                return fail(ResponseError::UnknownMemberId);
            }
            if generation != group.generation {
                return fail(ResponseError::IllegalGeneration);
            }
            let now = Instant::now();
            let leader = match &group.state {
                State::Empty | State::PreparingRebalance { .. } => {
                    return fail(ResponseError::RebalanceInProgress);
                }
                State::Stable { .. } => {
                    let m = group.member(member_id).expect("checked above");
                    m.last_seen = now;
                    let assignment = m.assignment.clone();
                    return group.sync_result(assignment);
                }
                State::CompletingRebalance { leader, .. } => leader.clone(),
            };
            let (tx, rx) = oneshot::channel();
            {
                let m = group.member(member_id).expect("checked above");
                m.last_seen = now;
                m.awaiting_sync = Some(tx);
            }
            if leader == member_id {
                let mut by_member: HashMap<String, Bytes> = assignments.into_iter().collect();
                let template = group.sync_result(Bytes::new());
                for m in &mut group.members {
                    m.assignment = by_member.remove(&m.id).unwrap_or_default();
                    if let Some(tx) = m.awaiting_sync.take() {
                        let _ = tx.send(SyncResult {
                            assignment: m.assignment.clone(),
                            ..template.clone()
                        });
                    }
                }
                let protocol = group.state.protocol().map(str::to_owned);
                group.state = State::Stable { leader, protocol };
            }
            rx
        };
        rx.await
            .unwrap_or_else(|_| fail(ResponseError::RebalanceInProgress))
    }

    /// Heartbeat: keeps the session alive and tells the member when to rejoin.
    pub fn heartbeat(
        &self,
        group_id: &str,
        generation: i32,
        member_id: &str,
        instance: Option<&str>,
    ) -> Option<ResponseError> {
        let mut groups = self.lock();
        let Some(group) = groups.get_mut(group_id) else {
            return Some(ResponseError::UnknownMemberId);
        };
        if group.is_fenced(member_id, instance) {
            return Some(ResponseError::FencedInstanceId);
        }
        let state = group.state.public();
        let current = group.generation;
        let Some(m) = group.member(member_id) else {
            return Some(ResponseError::UnknownMemberId);
        };
        m.last_seen = Instant::now();
        if generation != current {
            return Some(ResponseError::IllegalGeneration);
        }
        (state == GroupState::PreparingRebalance).then_some(ResponseError::RebalanceInProgress)
    }

    /// LeaveGroup: removes members, each named by its member id, its static instance id or
    /// both (an id that is not the instance's holder is fenced); the rest rebalance.
    pub fn leave(
        &self,
        group_id: &str,
        members: &[(String, Option<String>)],
    ) -> Vec<Option<ResponseError>> {
        let mut groups = self.lock();
        let Some(group) = groups.get_mut(group_id) else {
            return members
                .iter()
                .map(|_| Some(ResponseError::UnknownMemberId))
                .collect();
        };
        let now = Instant::now();
        let results = members
            .iter()
            .map(|(id, instance)| {
                let id = match instance.as_deref().and_then(|i| group.static_member(i)) {
                    Some(holder) if id.is_empty() || id == holder => holder.to_owned(),
                    Some(_) => return Some(ResponseError::FencedInstanceId),
                    None => id.clone(),
                };
                if group.has_member(&id) {
                    group.remove_member(&id, now);
                    None
                } else {
                    Some(ResponseError::UnknownMemberId)
                }
            })
            .collect();
        group.try_complete_join(now, false);
        results
    }

    /// Checks that a member may commit offsets for this generation. A commit naming a static
    /// `instance` id held by another member is from a replaced incarnation: `FENCED_INSTANCE_ID`,
    /// which is fatal for it (Kafka's answer; `UNKNOWN_MEMBER_ID` would make it rejoin and take
    /// the live incarnation's place back).
    pub fn validate_commit(
        &self,
        group_id: &str,
        generation: i32,
        member_id: &str,
        instance: Option<&str>,
    ) -> Option<ResponseError> {
        let mut groups = self.lock();
        let Some(group) = groups.get_mut(group_id) else {
            // Commits from outside any group (manual assignment) are allowed.
            return if generation < 0 {
                None
            } else {
                Some(ResponseError::IllegalGeneration)
            };
        };
        if generation < 0 && member_id.is_empty() {
            return if group.members.is_empty() {
                None
            } else {
                Some(ResponseError::UnknownMemberId)
            };
        }
        if group.is_fenced(member_id, instance) {
            return Some(ResponseError::FencedInstanceId);
        }
        let state = group.state.public();
        let current = group.generation;
        let Some(m) = group.member(member_id) else {
            return Some(ResponseError::UnknownMemberId);
        };
        m.last_seen = Instant::now();
        if generation != current {
            return Some(ResponseError::IllegalGeneration);
        }
        (state == GroupState::CompletingRebalance).then_some(ResponseError::RebalanceInProgress)
    }

    /// Expires sessions and rebalance deadlines; call it a few times a second.
    pub fn tick(&self) {
        let now = Instant::now();
        let mut groups = self.lock();
        for (name, group) in groups.iter_mut() {
            // Members must keep heartbeating, also while a rebalance waits for them; only a
            // parked JoinGroup or SyncGroup (whose connection can't heartbeat) keeps one alive.
            let expired: Vec<String> = group
                .members
                .iter()
                .filter(|m| m.is_expired(now))
                .map(|m| m.id.clone())
                .collect();
            for id in expired {
                tracing::info!(group = %name, member = %id, "session expired; rebalancing");
                group.remove_member(&id, now);
            }
            let deadline_passed = group.state.deadline().is_some_and(|d| now >= d);
            match group.state {
                State::PreparingRebalance { .. } => group.try_complete_join(now, deadline_passed),
                State::CompletingRebalance { .. } if deadline_passed => {
                    // The leader never sent the assignment: drop whoever didn't sync, start over.
                    let silent: Vec<String> = group
                        .members
                        .iter()
                        .filter(|m| !m.is_syncing())
                        .map(|m| m.id.clone())
                        .collect();
                    tracing::info!(group = %name, "assignment not sent in time; rebalancing");
                    for id in silent {
                        group.remove_member(&id, now);
                    }
                    if matches!(group.state, State::CompletingRebalance { .. }) {
                        group.prepare_rebalance(now);
                    }
                }
                _ => {}
            }
            group.pending_ids.retain(|_, lapses| *lapses > now);
        }
        groups.retain(|_, g| {
            !matches!(g.state, State::Empty) || !g.members.is_empty() || !g.pending_ids.is_empty()
        });
    }

    /// Groups with members, with their state and protocol type.
    pub fn list(&self) -> Vec<(String, GroupState, String)> {
        self.lock()
            .iter()
            .map(|(name, g)| {
                (
                    name.clone(),
                    g.state.public(),
                    g.protocol_type.clone().unwrap_or_default(),
                )
            })
            .collect()
    }

    /// Forgets a group that has no members (DeleteGroups). `Ok(false)` if it wasn't known.
    /// Drops the groups `doomed` names: their coordinator moved to another node (in a cluster,
    /// this node no longer leads their partition of `__consumer_offsets`). Members waiting in a
    /// join or a sync are answered, and find the new coordinator. How many were dropped.
    pub fn forget(&self, doomed: impl Fn(&str) -> bool) -> usize {
        let mut groups = self.lock();
        let before = groups.len();
        groups.retain(|name, _| !doomed(name));
        before - groups.len()
    }

    pub fn delete_if_empty(&self, group_id: &str) -> Result<bool, ResponseError> {
        let mut groups = self.lock();
        match groups.get(group_id) {
            None => Ok(false),
            Some(g) if !g.members.is_empty() || !g.pending_ids.is_empty() => {
                Err(ResponseError::NonEmptyGroup)
            }
            Some(_) => {
                groups.remove(group_id);
                Ok(true)
            }
        }
    }

    /// The topics the members of a consumer group subscribe to (from their JoinGroup
    /// metadata), `None` if the group has no members. A subscription that can't be decoded
    /// counts as every topic.
    pub fn subscribed_topics(&self, group_id: &str) -> Option<Option<Vec<String>>> {
        let groups = self.lock();
        let g = groups.get(group_id).filter(|g| !g.members.is_empty())?;
        let mut topics = Vec::new();
        for m in &g.members {
            for (_, metadata) in &m.protocols {
                let mut buf = metadata.clone();
                let decoded = (buf.len() >= 2)
                    .then(|| {
                        use bytes::Buf;
                        let version = buf.get_i16();
                        <kafka_protocol::messages::ConsumerProtocolSubscription as kafka_protocol::protocol::Decodable>::decode(&mut buf, version).ok()
                    })
                    .flatten();
                match decoded {
                    Some(sub) => topics.extend(sub.topics.iter().map(|t| t.as_str().to_string())),
                    None => return Some(None),
                }
            }
        }
        Some(Some(topics))
    }

    pub fn describe(&self, group_id: &str) -> Option<GroupDescription> {
        let groups = self.lock();
        let g = groups.get(group_id)?;
        let protocol = g.state.protocol().unwrap_or_default().to_owned();
        Some(GroupDescription {
            state: g.state.public(),
            protocol_type: g.protocol_type.clone().unwrap_or_default(),
            protocol: protocol.clone(),
            members: g
                .members
                .iter()
                .map(|m| MemberDescription {
                    member_id: m.id.clone(),
                    group_instance_id: m.group_instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    metadata: m
                        .protocols
                        .iter()
                        .find(|(n, _)| *n == protocol)
                        .map(|(_, md)| md.clone())
                        .unwrap_or_default(),
                    assignment: m.assignment.clone(),
                })
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(member_id: &str) -> JoinRequest {
        JoinRequest {
            group_id: "g".into(),
            member_id: member_id.into(),
            group_instance_id: None,
            client_id: "c".into(),
            client_host: "/127.0.0.1".into(),
            session_timeout: Duration::from_secs(10),
            rebalance_timeout: Duration::from_secs(10),
            protocol_type: "consumer".into(),
            protocols: vec![("range".into(), Bytes::from_static(b"m"))],
            require_known_member_id: true,
        }
    }

    #[tokio::test]
    async fn an_id_handed_out_with_member_id_required_survives_ticks() {
        let coordinator = GroupCoordinator::new(
            Duration::ZERO,
            Duration::from_secs(1),
            Duration::from_secs(60),
        );
        let first = coordinator.join(request("")).await;
        assert_eq!(first.error, Some(ResponseError::MemberIdRequired));
        coordinator.tick();
        coordinator.tick();
        let joined = coordinator.join(request(&first.member_id)).await;
        assert_eq!(joined.error, None);
        assert_eq!(joined.leader, first.member_id);
        assert_eq!(joined.members.len(), 1, "the leader gets the member list");
    }

    #[tokio::test]
    async fn a_dropped_join_does_not_count_as_rejoined() {
        let coordinator = GroupCoordinator::new(
            Duration::ZERO,
            Duration::from_secs(1),
            Duration::from_secs(60),
        );
        let fresh = || {
            let mut r = request("");
            r.require_known_member_id = false;
            r
        };
        // Members a and b form a stable group.
        let a = coordinator.join(fresh()).await;
        let (b, a) = tokio::join!(
            coordinator.join(fresh()),
            coordinator.join(request(&a.member_id))
        );
        let (s1, s2) = tokio::join!(
            coordinator.sync("g", a.generation_id, &a.member_id, None, vec![]),
            coordinator.sync("g", b.generation_id, &b.member_id, None, vec![])
        );
        assert_eq!((s1.error, s2.error), (None, None));
        assert_eq!(coordinator.describe("g").unwrap().state, GroupState::Stable);

        // c arrives; a rejoins but its connection closes before the answer.
        let c = coordinator.join(fresh());
        tokio::pin!(c);
        assert!(
            futures_util::future::poll_immediate(&mut c).await.is_none(),
            "c waits"
        );
        {
            let abandoned = coordinator.join(request(&a.member_id));
            tokio::pin!(abandoned);
            assert!(
                futures_util::future::poll_immediate(&mut abandoned)
                    .await
                    .is_none()
            );
        }
        // b rejoins: everyone *alive* has not rejoined yet (a is gone), so no new generation.
        let b_rejoin = coordinator.join(request(&b.member_id));
        tokio::pin!(b_rejoin);
        assert!(
            futures_util::future::poll_immediate(&mut b_rejoin)
                .await
                .is_none()
        );
        assert_eq!(
            coordinator.describe("g").unwrap().state,
            GroupState::PreparingRebalance,
            "a closed JoinGroup must not complete the rebalance"
        );
    }

    #[tokio::test]
    async fn a_rebalance_keeps_the_leader_and_shows_the_previous_protocol_meanwhile() {
        let coordinator = GroupCoordinator::new(
            Duration::ZERO,
            Duration::from_secs(1),
            Duration::from_secs(60),
        );
        let fresh = || {
            let mut r = request("");
            r.require_known_member_id = false;
            r
        };
        let a = coordinator.join(fresh()).await;
        let synced = coordinator
            .sync("g", a.generation_id, &a.member_id, None, vec![])
            .await;
        assert_eq!(synced.error, None);
        let stable = coordinator.describe("g").unwrap();
        assert_eq!(
            (stable.state, stable.protocol.as_str()),
            (GroupState::Stable, "range")
        );

        // b arrives: while the group waits for a to rejoin, the old protocol is still shown.
        let b = coordinator.join(fresh());
        tokio::pin!(b);
        assert!(futures_util::future::poll_immediate(&mut b).await.is_none());
        let preparing = coordinator.describe("g").unwrap();
        assert_eq!(
            (preparing.state, preparing.protocol.as_str()),
            (GroupState::PreparingRebalance, "range")
        );
        assert_eq!(
            coordinator.heartbeat("g", a.generation_id, &a.member_id, None),
            Some(ResponseError::RebalanceInProgress)
        );
        // Both rejoined: the next generation starts, led by a.
        let (b, a2) = tokio::join!(b, coordinator.join(request(&a.member_id)));
        assert_eq!(a2.generation_id, a.generation_id + 1);
        assert_eq!(
            (a2.leader.as_str(), b.leader.as_str()),
            (a.member_id.as_str(), a.member_id.as_str())
        );
        assert_eq!(a2.members.len(), 2, "the leader gets the roster");
        assert_eq!(
            coordinator.describe("g").unwrap().state,
            GroupState::CompletingRebalance
        );
    }
}
