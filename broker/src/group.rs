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

#[derive(Debug)]
struct Group {
    state: GroupState,
    generation: i32,
    protocol_type: Option<String>,
    protocol: Option<String>,
    leader: Option<String>,
    /// Members in join order (the first is the default leader).
    members: Vec<Member>,
    /// Ids handed out with MEMBER_ID_REQUIRED that haven't joined yet, with when they lapse.
    pending_ids: HashMap<String, Instant>,
    /// When PreparingRebalance gives up on members that haven't rejoined, and when
    /// CompletingRebalance gives up on members that haven't sent SyncGroup.
    rebalance_deadline: Option<Instant>,
    /// A new group waits this long for more members before its first generation.
    initial_delay_until: Option<Instant>,
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
    fn new() -> Self {
        Self {
            state: GroupState::Empty,
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: Vec::new(),
            pending_ids: HashMap::new(),
            rebalance_deadline: None,
            initial_delay_until: None,
        }
    }

    fn member(&mut self, id: &str) -> Option<&mut Member> {
        self.members.iter_mut().find(|m| m.id == id)
    }

    fn has_member(&self, id: &str) -> bool {
        self.members.iter().any(|m| m.id == id)
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
        if self.state != GroupState::PreparingRebalance {
            let longest = self
                .members
                .iter()
                .map(|m| m.rebalance_timeout)
                .max()
                .unwrap_or_default();
            self.rebalance_deadline = Some(now + longest);
        }
        self.state = GroupState::PreparingRebalance;
    }

    fn remove_member(&mut self, id: &str, now: Instant) {
        self.members.retain(|m| m.id != id);
        if self.leader.as_deref() == Some(id) {
            self.leader = None;
        }
        if self.members.is_empty() {
            self.become_empty();
        } else {
            self.prepare_rebalance(now);
        }
    }

    fn become_empty(&mut self) {
        self.state = GroupState::Empty;
        self.generation += 1;
        self.protocol = None;
        self.leader = None;
        self.rebalance_deadline = None;
        self.initial_delay_until = None;
    }

    /// Completes the join phase if everyone has rejoined (or `force` after the deadline).
    fn try_complete_join(&mut self, now: Instant, force: bool) {
        if self.state != GroupState::PreparingRebalance {
            return;
        }
        if self.initial_delay_until.is_some_and(|t| now < t) && !force {
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
        self.initial_delay_until = None;
        // The leader has this long to send the assignment.
        let longest = self
            .members
            .iter()
            .map(|m| m.rebalance_timeout)
            .max()
            .unwrap_or_default();
        self.rebalance_deadline = Some(now + longest);
        self.generation += 1;
        self.protocol = choose_protocol(&self.members);
        if self.leader.as_ref().is_none_or(|l| !self.has_member(l)) {
            self.leader = Some(self.members[0].id.clone());
        }
        let leader = self.leader.clone().unwrap_or_default();
        let protocol = self.protocol.clone().unwrap_or_default();
        let roster: Vec<_> = self
            .members
            .iter()
            .map(|m| {
                let metadata = m
                    .protocols
                    .iter()
                    .find(|(name, _)| *name == protocol)
                    .map(|(_, md)| md.clone())
                    .unwrap_or_default();
                (m.id.clone(), m.group_instance_id.clone(), metadata)
            })
            .collect();
        self.state = GroupState::CompletingRebalance;
        for m in &mut self.members {
            m.last_seen = now;
            m.assignment = Bytes::new();
            if let Some(tx) = m.awaiting_join.take() {
                let _ = tx.send(JoinResult {
                    error: None,
                    generation_id: self.generation,
                    protocol_type: self.protocol_type.clone(),
                    protocol_name: self.protocol.clone(),
                    leader: leader.clone(),
                    member_id: m.id.clone(),
                    members: if m.id == leader {
                        roster.clone()
                    } else {
                        Vec::new()
                    },
                });
            }
        }
    }

    fn sync_result(&self, assignment: Bytes) -> SyncResult {
        SyncResult {
            error: None,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol.clone(),
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
        let fail = |e: ResponseError, member_id: &str| JoinResult {
            error: Some(e),
            generation_id: -1,
            member_id: member_id.to_string(),
            ..Default::default()
        };
        if req.group_id.is_empty() {
            return fail(ResponseError::InvalidGroupId, &req.member_id);
        }
        if req.session_timeout < self.min_session_timeout
            || req.session_timeout > self.max_session_timeout
        {
            return fail(ResponseError::InvalidSessionTimeout, &req.member_id);
        }
        if req.protocols.is_empty() || req.protocol_type.is_empty() {
            return fail(ResponseError::InconsistentGroupProtocol, &req.member_id);
        }
        let now = Instant::now();
        let rx = {
            let mut groups = self.lock();
            let group = groups
                .entry(req.group_id.clone())
                .or_insert_with(Group::new);
            if !group.members.is_empty() {
                let same_type = group.protocol_type.as_deref() == Some(req.protocol_type.as_str());
                let shares_protocol = group.members.iter().all(|m| {
                    m.protocols
                        .iter()
                        .any(|(n, _)| req.protocols.iter().any(|(rn, _)| rn == n))
                });
                if !same_type || !shares_protocol {
                    return fail(ResponseError::InconsistentGroupProtocol, &req.member_id);
                }
            }
            let member_id = if req.member_id.is_empty() {
                let id = format!("{}-{}", req.client_id, uuid::Uuid::new_v4());
                if req.require_known_member_id {
                    // The id lapses if the member doesn't come back within its session timeout.
                    group
                        .pending_ids
                        .insert(id.clone(), now + req.session_timeout);
                    return fail(ResponseError::MemberIdRequired, &id);
                }
                id
            } else if group.has_member(&req.member_id)
                || group.pending_ids.remove(&req.member_id).is_some()
            {
                req.member_id.clone()
            } else {
                return fail(ResponseError::UnknownMemberId, &req.member_id);
            };
            let (tx, rx) = oneshot::channel();
            if let Some(m) = group.member(&member_id) {
                m.protocols = req.protocols;
                m.session_timeout = req.session_timeout;
                m.rebalance_timeout = req.rebalance_timeout;
                m.last_seen = now;
                m.awaiting_join = Some(tx);
            } else {
                group.members.push(Member {
                    id: member_id.clone(),
                    group_instance_id: req.group_instance_id,
                    client_id: req.client_id,
                    client_host: req.client_host,
                    session_timeout: req.session_timeout,
                    rebalance_timeout: req.rebalance_timeout,
                    protocols: req.protocols,
                    assignment: Bytes::new(),
                    last_seen: now,
                    awaiting_join: Some(tx),
                    awaiting_sync: None,
                });
            }
            group.protocol_type = Some(req.protocol_type);
            match group.state {
                GroupState::Empty => {
                    group.prepare_rebalance(now);
                    // Give the other members of a starting group a moment to join the same generation.
                    group.initial_delay_until = Some(now + self.initial_rebalance_delay);
                }
                GroupState::PreparingRebalance => {
                    if let Some(until) = group.initial_delay_until {
                        let cap = group.rebalance_deadline.unwrap_or(until);
                        group.initial_delay_until =
                            Some((now + self.initial_rebalance_delay).min(cap));
                    }
                }
                GroupState::CompletingRebalance | GroupState::Stable => {
                    group.prepare_rebalance(now)
                }
            }
            group.try_complete_join(now, false);
            rx
        };
        rx.await
            .unwrap_or_else(|_| fail(ResponseError::RebalanceInProgress, ""))
    }

    /// SyncGroup: the leader hands out assignments; everyone waits for theirs.
    pub async fn sync(
        &self,
        group_id: &str,
        generation: i32,
        member_id: &str,
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
            if !group.has_member(member_id) {
                return fail(ResponseError::UnknownMemberId);
            }
            if generation != group.generation {
                return fail(ResponseError::IllegalGeneration);
            }
            let now = Instant::now();
            match group.state {
                GroupState::Empty | GroupState::PreparingRebalance => {
                    return fail(ResponseError::RebalanceInProgress);
                }
                GroupState::Stable => {
                    let m = group.member(member_id).expect("checked above");
                    m.last_seen = now;
                    let assignment = m.assignment.clone();
                    return group.sync_result(assignment);
                }
                GroupState::CompletingRebalance => {}
            }
            let (tx, rx) = oneshot::channel();
            {
                let m = group.member(member_id).expect("checked above");
                m.last_seen = now;
                m.awaiting_sync = Some(tx);
            }
            if group.leader.as_deref() == Some(member_id) {
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
                group.state = GroupState::Stable;
                group.rebalance_deadline = None;
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
    ) -> Option<ResponseError> {
        let mut groups = self.lock();
        let Some(group) = groups.get_mut(group_id) else {
            return Some(ResponseError::UnknownMemberId);
        };
        let state = group.state;
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

    /// LeaveGroup: removes members; the rest rebalance.
    pub fn leave(&self, group_id: &str, member_ids: &[String]) -> Vec<Option<ResponseError>> {
        let mut groups = self.lock();
        let Some(group) = groups.get_mut(group_id) else {
            return member_ids
                .iter()
                .map(|_| Some(ResponseError::UnknownMemberId))
                .collect();
        };
        let now = Instant::now();
        let results = member_ids
            .iter()
            .map(|id| {
                if group.has_member(id) {
                    group.remove_member(id, now);
                    None
                } else {
                    Some(ResponseError::UnknownMemberId)
                }
            })
            .collect();
        group.try_complete_join(now, false);
        results
    }

    /// Checks that a member may commit offsets for this generation.
    pub fn validate_commit(
        &self,
        group_id: &str,
        generation: i32,
        member_id: &str,
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
        let state = group.state;
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
            let deadline_passed = group.rebalance_deadline.is_some_and(|d| now >= d);
            match group.state {
                GroupState::PreparingRebalance => group.try_complete_join(now, deadline_passed),
                GroupState::CompletingRebalance if deadline_passed => {
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
                    if group.state == GroupState::CompletingRebalance {
                        group.prepare_rebalance(now);
                    }
                }
                _ => {}
            }
            group.pending_ids.retain(|_, lapses| *lapses > now);
        }
        groups.retain(|_, g| {
            g.state != GroupState::Empty || !g.members.is_empty() || !g.pending_ids.is_empty()
        });
    }

    /// Groups with members, with their state and protocol type.
    pub fn list(&self) -> Vec<(String, GroupState, String)> {
        self.lock()
            .iter()
            .map(|(name, g)| {
                (
                    name.clone(),
                    g.state,
                    g.protocol_type.clone().unwrap_or_default(),
                )
            })
            .collect()
    }

    pub fn describe(&self, group_id: &str) -> Option<GroupDescription> {
        let groups = self.lock();
        let g = groups.get(group_id)?;
        let protocol = g.protocol.clone().unwrap_or_default();
        Some(GroupDescription {
            state: g.state,
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
            coordinator.sync("g", a.generation_id, &a.member_id, vec![]),
            coordinator.sync("g", b.generation_id, &b.member_id, vec![])
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
}
