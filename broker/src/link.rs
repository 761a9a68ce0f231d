//! A node's network link, which a test or the lab can cut: `lab node isolate` cuts a node off
//! from the other nodes and from its clients while it keeps running, as a network partition
//! does; `--keep-clients` cuts it off from the other nodes only, the partition in which a
//! leader still takes `acks=1` writes that no follower will ever copy. The lab's nodes share
//! one process, where no firewall can come between them, so the broker cuts its own sockets:
//! while the link is cut, every connection it has across the cut is closed (its clients', the
//! other voters', the replica fetchers' both ways, transaction markers), new ones are closed as
//! they come, and it opens none. Reconnected, it goes on as a node back from a partition does.

use tokio::sync::watch;

/// The client id of every connection a node opens to another node's client listener (replica
/// fetchers, transaction markers): how a node tells them from its clients' when it is cut off
/// from the other nodes only.
pub const NODE_CLIENT_ID: &str = "cluster-node";

/// How much of a node's network is cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Cut {
    /// Connected.
    #[default]
    None,
    /// Cut off from the other nodes (no voter traffic, no replication either way, no markers);
    /// its clients still reach it.
    FromNodes,
    /// Cut off from the other nodes and from every client.
    FromAll,
}

/// Whether a node's network is cut; shared by everything of the node that talks over it.
#[derive(Debug, Default)]
pub struct Link {
    state: watch::Sender<Cut>,
}

impl Link {
    /// Cuts the link as `cut` says (`Cut::None` mends it).
    pub fn set(&self, cut: Cut) {
        self.state.send_replace(cut);
    }

    /// How much of it is cut.
    pub fn get(&self) -> Cut {
        *self.state.borrow()
    }

    /// Whether the other nodes are out of reach (and it out of theirs).
    pub fn nodes_cut(&self) -> bool {
        self.get() != Cut::None
    }

    /// Whether clients are out of reach too.
    pub fn clients_cut(&self) -> bool {
        self.get() == Cut::FromAll
    }

    /// An error for a connection to another node, which this node would open while cut off.
    pub fn check(&self) -> std::io::Result<()> {
        if self.nodes_cut() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotConnected,
                "this node's network is cut",
            ));
        }
        Ok(())
    }

    /// Returns once the other nodes are cut off (at once if they are).
    pub async fn nodes_cut_off(&self) {
        self.wait_for(|cut| cut != Cut::None).await;
    }

    /// Returns once the clients are cut off (at once if they are).
    pub async fn clients_cut_off(&self) {
        self.wait_for(|cut| cut == Cut::FromAll).await;
    }

    async fn wait_for(&self, cut_off: impl Fn(Cut) -> bool) {
        let mut changes = self.state.subscribe();
        // The sender lives as long as `self`.
        let _ = changes.wait_for(|cut| cut_off(*cut)).await;
    }
}
