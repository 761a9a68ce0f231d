//! The voters' wire: each message is a 4-byte big-endian length and that many bytes of JSON,
//! over TCP between the `--controller-listen` addresses. A connection carries one request at a
//! time and its reply. Raft's messages (AppendEntries, Vote, InstallSnapshot) and the brokers'
//! requests to the active controller ([`ControllerRequest`]) share it.

use std::time::Duration;

use openraft::BasicNode;
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use std::sync::Arc;

use crate::link::Link;

use super::types::TypeConfig;
use super::types::{ControllerReply, ControllerRequest};

/// The largest message accepted: a snapshot chunk and some room.
const MAX_FRAME: usize = 64 * 1024 * 1024;

/// How long a connection attempt to another voter may take.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// A request from one voter to another.
#[derive(Debug, Serialize, Deserialize)]
pub enum Rpc {
    Append(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<u64>),
    Snapshot(InstallSnapshotRequest<TypeConfig>),
    Controller(ControllerRequest),
}

/// The answer to an [`Rpc`] of the same name.
#[derive(Debug, Serialize, Deserialize)]
pub enum RpcReply {
    Append(Result<AppendEntriesResponse<u64>, RaftError<u64>>),
    Vote(Result<VoteResponse<u64>, RaftError<u64>>),
    Snapshot(Result<InstallSnapshotResponse<u64>, RaftError<u64, InstallSnapshotError>>),
    Controller(ControllerReply),
}

/// Writes `message` as one frame.
pub async fn write_frame<T: Serialize>(stream: &mut TcpStream, message: &T) -> std::io::Result<()> {
    let body = serde_json::to_vec(message).map_err(std::io::Error::other)?;
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
    frame.extend_from_slice(&body);
    stream.write_all(&frame).await
}

/// Reads one frame; `Ok(None)` when the peer closed the connection between frames.
pub async fn read_frame<T: DeserializeOwned>(stream: &mut TcpStream) -> std::io::Result<Option<T>> {
    let mut len = [0u8; 4];
    match stream.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(std::io::Error::other(format!("a frame of {len} bytes")));
    }
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).await?;
    serde_json::from_slice(&body)
        .map(Some)
        .map_err(std::io::Error::other)
}

/// A connection to another voter, opened when first needed and again after a failure.
#[derive(Debug)]
pub struct Peer {
    addr: String,
    stream: Option<TcpStream>,
    link: Arc<Link>,
}

impl Peer {
    pub fn new(addr: String, link: Arc<Link>) -> Self {
        Self {
            addr,
            stream: None,
            link,
        }
    }

    /// Sends `rpc` and waits at most `timeout` for its reply.
    pub async fn call(&mut self, rpc: &Rpc, timeout: Duration) -> std::io::Result<RpcReply> {
        match tokio::time::timeout(timeout, self.exchange(rpc)).await {
            Ok(reply) => reply,
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no reply from {} within {timeout:?}", self.addr),
            )),
        }
    }

    async fn exchange(&mut self, rpc: &Rpc) -> std::io::Result<RpcReply> {
        if self.link.nodes_cut() {
            self.stream = None;
        }
        self.link.check()?;
        // Taken out while in use: an exchange given up half way (an error, or its future
        // dropped) leaves no connection out of step behind.
        let mut stream = match self.stream.take() {
            Some(stream) => stream,
            None => {
                let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&self.addr))
                    .await
                    .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect"))??;
                stream.set_nodelay(true)?;
                stream
            }
        };
        write_frame(&mut stream, rpc).await?;
        let reply = read_frame(&mut stream).await?.ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "closed before replying")
        })?;
        self.stream = Some(stream);
        Ok(reply)
    }
}

/// Opens a [`Voter`] connection for each voter openraft talks to, over this node's link.
#[derive(Debug, Clone)]
pub struct Network(pub Arc<Link>);

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Voter;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> Voter {
        Voter {
            target,
            peer: Peer::new(node.addr.clone(), self.0.clone()),
        }
    }
}

/// openraft's side of a [`Peer`].
#[derive(Debug)]
pub struct Voter {
    target: u64,
    peer: Peer,
}

type RpcResult<T, E = openraft::error::Infallible> =
    Result<T, RPCError<u64, BasicNode, RaftError<u64, E>>>;

impl Voter {
    async fn call(&mut self, rpc: Rpc, option: &RPCOption) -> Result<RpcReply, Unreachable> {
        self.peer
            .call(&rpc, option.hard_ttl())
            .await
            .map_err(|e| Unreachable::new(&e))
    }

    fn remote<T, E: std::error::Error>(
        &self,
        reply: Result<T, RaftError<u64, E>>,
    ) -> RpcResult<T, E> {
        reply.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

fn unexpected<E: std::error::Error>(
    reply: RpcReply,
) -> RPCError<u64, BasicNode, RaftError<u64, E>> {
    let e = std::io::Error::other(format!("a reply of the wrong kind: {reply:?}"));
    RPCError::Network(NetworkError::new(&e))
}

impl RaftNetwork<TypeConfig> for Voter {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<u64>> {
        match self.call(Rpc::Append(rpc), &option).await? {
            RpcReply::Append(reply) => self.remote(reply),
            other => Err(unexpected(other)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<u64>, InstallSnapshotError> {
        match self.call(Rpc::Snapshot(rpc), &option).await? {
            RpcReply::Snapshot(reply) => self.remote(reply),
            other => Err(unexpected(other)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<u64>> {
        match self.call(Rpc::Vote(rpc), &option).await? {
            RpcReply::Vote(reply) => self.remote(reply),
            other => Err(unexpected(other)),
        }
    }
}
