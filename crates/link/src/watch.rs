//! Waiting for a link's state to change, by listening to the kernel's link
//! notifications instead of polling with sleeps.

use std::time::{Duration, Instant};

use futures::StreamExt;
use netlink_packet_core::NetlinkPayload;
use netlink_packet_route::RouteNetlinkMessage;

use crate::connection::Netlink;
use crate::error::Result;
use crate::links::{Link, OperState};

/// `RTMGRP_LINK`: link up/down/change notifications.
const RTMGRP_LINK: u32 = 1;

impl Netlink {
    /// Wait until link `index` is operationally up (for a bridge port: its
    /// peer is up and the port forwards), at most `timeout`. Returns the last
    /// state seen, so the caller can report e.g. `bridge port in error state:
    /// down`; `NotPresent` if the link vanished.
    pub fn wait_oper_up(&self, index: u32, timeout: Duration) -> Result<OperState> {
        // Subscribe before reading the current state: a change between the
        // two is then queued, not lost.
        let mut notifications = self.subscribe(RTMGRP_LINK)?;
        let mut state = match self.link_by_index(index)? {
            Some(l) => l.oper_state,
            None => return Ok(OperState::NotPresent),
        };
        let deadline = Instant::now() + timeout;
        while state != OperState::Up {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let next =
                self.block_on(async { tokio::time::timeout(left, notifications.next()).await });
            let Ok(Some((msg, _))) = next else {
                break;
            };
            match msg.payload {
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(m))
                    if m.header.index == index =>
                {
                    state = Link::from_message(&m).oper_state;
                }
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(m))
                    if m.header.index == index =>
                {
                    return Ok(OperState::NotPresent);
                }
                _ => {}
            }
        }
        Ok(state)
    }
}
