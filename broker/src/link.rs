//! A node's network link, which a test or the lab can cut: `lab node isolate` cuts a node off
//! from the other nodes and from its clients while it keeps running, as a network partition
//! does. The lab's nodes share one process, where no firewall can come between them, so the
//! broker cuts its own sockets: while the link is cut, every connection it has is closed (its
//! clients', the other voters', its replica fetchers'), new ones are closed as they come, and
//! it opens none. Reconnected, it goes on as a node back from a partition does.

use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::watch;

/// Whether a node's network is cut; shared by everything of the node that talks over it.
#[derive(Debug)]
pub struct Link {
    cut: AtomicBool,
    changes: watch::Sender<bool>,
}

impl Default for Link {
    fn default() -> Self {
        Self {
            cut: AtomicBool::new(false),
            changes: watch::Sender::new(false),
        }
    }
}

impl Link {
    /// Cuts the link (`true`) or mends it (`false`).
    pub fn set_cut(&self, cut: bool) {
        self.cut.store(cut, Ordering::SeqCst);
        self.changes.send_replace(cut);
    }

    pub fn is_cut(&self) -> bool {
        self.cut.load(Ordering::SeqCst)
    }

    /// An error for a connection this node would open while cut.
    pub fn check(&self) -> std::io::Result<()> {
        if self.is_cut() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotConnected,
                "this node's network is cut",
            ));
        }
        Ok(())
    }

    /// Returns once the link is cut (at once if it is).
    pub async fn cut(&self) {
        let mut changes = self.changes.subscribe();
        // The sender lives as long as `self`.
        let _ = changes.wait_for(|cut| *cut).await;
    }
}
