//! Answers to stale statements (issue 13, item 6).
//!
//! A peer gossips each update a bounded number of times and then never
//! again. A peer that heard a suspicion but lost every copy of its
//! refutation would keep suspecting until its suspicion ran out and then
//! declare a live peer dead, and everyone it told would follow. It still
//! gossips its stale suspicion, though, so whoever knows better answers it:
//! the answer goes straight back to the sender, ahead of anything queued.
//!
//! The rules, each a strict step up in the precedence order of
//! `member.rs`, so an answer is never answered in turn by the same rule and
//! chains of answers end:
//! 1. A Suspect or Dead of a member at an incarnation older than the Alive
//!    we hold is answered with that Alive.
//! 2. A Suspect, Dead or Left of this peer at an incarnation it has already
//!    refuted is answered with its current Alive.
//! 3. Left is final for its incarnation: any other statement about a member
//!    we hold Left, at that incarnation or older, is answered with the
//!    Left. Never with an Alive: a correction must not undo a leave.
//! 4. A peer that has left answers any statement about itself at its
//!    incarnation or older (other than its Left) with its Left, and never
//!    announces itself Alive again.
//! 5. The first suspecter gossips its suspicion before anyone knows
//!    better, so it may hold nothing stale to be answered for; instead it
//!    probes its suspect every probe period while the suspicion lasts, the
//!    suspicion first in the ping (`probe.rs`, `reprobe_own_suspects`),
//!    and a live suspect answers by rule 2.
//!
//! Current accusations (the incarnation we hold) are not answered by rules
//! 1 and 2, so a dead peer is still convicted.

use std::net::SocketAddr;

use rand::RngCore;

use crate::proto::codec;
use crate::proto::member::State;
use crate::proto::message::{Body, Update};
use crate::proto::swim::{Channel, Source, Swim};

/// Most stale statements answered per received message (each answer is
/// one update, well under a datagram).
pub(crate) const CORRECTIONS_MAX: usize = 4;

impl<R: RngCore> Swim<R> {
    /// Applies the updates a message carried and answers the stale ones to
    /// `from` (see the module doc).
    pub(crate) fn apply_gossip(
        &mut self,
        now: std::time::Instant,
        from: SocketAddr,
        updates: Vec<Update>,
    ) {
        let mut corrections = Vec::new();
        let mut accused = false;
        for update in updates {
            if corrections.len() < CORRECTIONS_MAX {
                if let Some(newer) = self.correction_for(&update) {
                    accused |= update.id() == self.me.id;
                    corrections.push(newer);
                }
            }
            self.apply(now, update, Source::Gossip);
        }
        if !corrections.is_empty() {
            self.send_corrections(from, corrections);
        }
        if accused && !self.left {
            self.rebroadcast_self();
        }
    }

    /// Rule 2, beyond the sender: an old accusation of this peer still
    /// goes round, so others may have missed the refutation too. Announce
    /// it afresh, first in the next datagrams (the ack, if the accusation
    /// came in a probe) and for a full round of retransmits. Never after
    /// leaving: that would undo the Left.
    fn rebroadcast_self(&mut self) {
        debug_assert!(!self.left, "a peer that left announces only its Left");
        self.broadcasts.push((*self.me_entry.alive).clone());
    }

    /// The statement to send back to a peer that told us `update`, when
    /// ours is newer by the rules in the module doc.
    pub(crate) fn correction_for(&self, update: &Update) -> Option<Update> {
        let (id, incarnation, state) = (update.id(), update.incarnation(), update.state());
        if id == self.me.id {
            return self.correction_about_me(incarnation, state);
        }
        let entry = self.members.get(&id)?;
        // We answer with the signed statement we hold, never a new one.
        let ours = || self.entries.get(&id).map(|e| e.current().clone());
        match entry.state {
            // Rule 3: Left is final for its incarnation.
            State::Left => (state != State::Left && incarnation <= entry.incarnation)
                .then(ours)
                .flatten(),
            // Rule 1: the sender missed the refutation.
            State::Alive => (matches!(state, State::Suspect | State::Dead)
                && incarnation < entry.incarnation)
                .then(ours)
                .flatten(),
            State::Suspect | State::Dead => None,
        }
    }

    /// Rules 2 and 4: a statement about this peer.
    fn correction_about_me(
        &self,
        incarnation: crate::proto::member::Incarnation,
        state: State,
    ) -> Option<Update> {
        let mine = self.me.incarnation;
        if self.left {
            let stale = incarnation < mine || (incarnation == mine && state != State::Left);
            return stale.then(|| self.me_entry.current().clone());
        }
        (state != State::Alive && incarnation < mine).then(|| (*self.me_entry.alive).clone())
    }

    /// Sends `updates` straight back to a peer that is behind, ahead of
    /// anything queued, as many as fit one datagram (the sender repeats
    /// its stale ones, so the rest get their turn).
    fn send_corrections(&mut self, to: SocketAddr, updates: Vec<Update>) {
        let mut env = self.envelope(Body::Gossip);
        let mut used = codec::header_len() + codec::encoded_len(&env) + codec::varint_max();
        for update in updates {
            let len = codec::encoded_len(&update);
            if used + len > self.config.max_datagram_size {
                break;
            }
            used += len;
            env.updates.push(update);
        }
        if !env.updates.is_empty() {
            self.push_transmit(to, Channel::Datagram, &env);
        }
    }
}
