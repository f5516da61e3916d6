//! The authorship checks of `auth.rs`, as the state machine applies them
//! to what it hears, and the signing of this peer's own statements.
//!
//! Order, cheapest first: weight, then a signature at all, then the key
//! (an Alive's key must hash to its member's id and equal the one already
//! learned; any other statement's author must be a member we know), then
//! the signature itself. The incarnation bound is checked by the caller,
//! which knows the last accepted incarnation. Nothing here changes state
//! but the rejection counters.

use rand::RngCore;
use ringkv_ring::NodeId;

use crate::proto::auth::{self, PublicKey, Reject, Sig};
use crate::proto::member::{Incarnation, WEIGHT_MAX};
use crate::proto::message::{Entry, Update};
use crate::proto::swim::{Source, Swim};

impl<R: RngCore> Swim<R> {
    /// Signs one of this peer's own statements.
    pub(crate) fn signed(&self, update: Update) -> Update {
        auth::sign(self.auth.as_ref(), &self.config.cluster, update)
    }

    /// This peer's own suspicion of `id` at `incarnation`, signed.
    pub(crate) fn own_suspect(&self, id: NodeId, incarnation: Incarnation) -> Update {
        self.signed(Update::Suspect {
            id,
            incarnation,
            by: self.me.id,
            sig: Sig::NONE,
        })
    }

    /// Whether `incarnation` is at most `incarnation_jump_max` above `last`.
    pub(crate) fn within_jump(&self, last: Incarnation, incarnation: Incarnation) -> bool {
        incarnation <= last.saturating_add(self.config.incarnation_jump_max)
    }

    /// The key learned for `author` (this peer's own included).
    fn key_of(&self, author: &NodeId) -> Option<PublicKey> {
        if *author == self.me.id {
            return Some(self.auth.public_key());
        }
        self.entries.get(author).and_then(|e| e.key()).copied()
    }

    /// Whether `update` is signed by its author, and an Alive's key and
    /// weight are acceptable. This peer's own statements pass unchecked.
    pub(crate) fn check(&self, update: &Update, source: Source) -> Result<(), Reject> {
        if source == Source::Local {
            return Ok(());
        }
        if let Update::Alive { meta, .. } = update {
            if !(1..=WEIGHT_MAX).contains(&meta.weight) {
                return Err(Reject::Weight);
            }
        }
        if update.sig().is_none() {
            return Err(Reject::Unsigned);
        }
        let key = match update {
            Update::Alive { id, key, .. } => {
                let learned = self.key_of(id);
                if !self.auth.key_matches(id, key) || learned.is_some_and(|k| k != *key) {
                    return Err(Reject::KeyMismatch);
                }
                *key
            }
            _ => self
                .key_of(&auth::author(update))
                .ok_or(Reject::UnknownSigner)?,
        };
        let msg = auth::statement_bytes(&self.config.cluster, update);
        if self.auth.verify(&key, &msg, update.sig()) {
            Ok(())
        } else {
            Err(Reject::BadSignature)
        }
    }

    /// Whether `update` is signed with the key of `entry`'s Alive (for a
    /// member not learned yet, whose Left arrives with its Alive).
    pub(crate) fn check_with_key(&self, update: &Update, entry: &Entry) -> Result<(), Reject> {
        if update.sig().is_none() {
            return Err(Reject::Unsigned);
        }
        let key = entry.key().ok_or(Reject::Malformed)?;
        let msg = auth::statement_bytes(&self.config.cluster, update);
        if self.auth.verify(key, &msg, update.sig()) {
            Ok(())
        } else {
            Err(Reject::BadSignature)
        }
    }

    /// [`Swim::check`], counting a rejection.
    pub(crate) fn accept(&mut self, update: &Update, source: Source) -> bool {
        match self.check(update, source) {
            Ok(()) => true,
            Err(reason) => {
                self.reject(reason);
                false
            }
        }
    }

    /// Counts a dropped statement.
    pub(crate) fn reject(&mut self, reason: Reject) {
        self.stats.rejected.count(reason);
    }
}
