//! The serving side of handoff and anti-entropy: answers other peers'
//! range page, summary, versions and read-many requests. Does IO (sled,
//! through the store).

use anyhow::{bail, Result};

use crate::rpc::api::{RangePageReply, Reply, Request, SummaryReply, VersionsReply};
use crate::rpc::codec;
use crate::shared::Kv;

use super::{PAGE_MAX, READ_MANY_MAX};

/// Serves the range requests of other peers' handoff and anti-entropy.
pub(crate) async fn serve(kv: &Kv, request: Request) -> Result<Vec<u8>> {
    let store = kv.store.clone();
    let range_request = matches!(
        request,
        Request::RangePage { .. }
            | Request::RangeSummary { .. }
            | Request::RangeVersions { any: false, .. }
    );
    if range_request && !kv.holds_any() {
        bail!("this peer is still receiving its first ranges and serves none yet");
    }
    Ok(match request {
        Request::RangePage {
            range,
            after,
            max_bytes,
        } => {
            let max = (max_bytes as usize).clamp(1, PAGE_MAX);
            let page = tokio::task::spawn_blocking(move || {
                store.page(&range, after.as_deref(), usize::MAX, max)
            })
            .await??;
            let batch = codec::encode(&page.records);
            // The store's records times the range's share of the ring:
            // enough for a progress bar, and free.
            let estimate = (kv.store.len() as f64 * range.fraction()) as u64;
            codec::encode(&Reply::Ok(RangePageReply {
                estimate,
                check: *blake3::hash(&batch).as_bytes(),
                records: u32::try_from(page.records.len()).unwrap_or(u32::MAX),
                batch,
                next: page.next,
            }))
        }
        Request::RangeSummary { range } => {
            let s = tokio::task::spawn_blocking(move || store.summary(&range)).await??;
            codec::encode(&Reply::Ok(SummaryReply {
                hash: s.hash,
                records: s.records,
            }))
        }
        Request::RangeVersions {
            range, after, max, ..
        } => {
            let max = (max as usize).clamp(1, 65_536);
            let (versions, next) =
                tokio::task::spawn_blocking(move || store.versions(&range, after.as_deref(), max))
                    .await??;
            codec::encode(&Reply::Ok(VersionsReply { versions, next }))
        }
        Request::ReadMany { keys } => {
            if keys.len() > READ_MANY_MAX {
                bail!("at most {READ_MANY_MAX} keys per request");
            }
            let records = keys
                .iter()
                .map(|k| store.get(k))
                .collect::<Result<Vec<_>, _>>()?;
            codec::encode(&Reply::Ok(records))
        }
        _ => bail!("not a range request"),
    })
}
