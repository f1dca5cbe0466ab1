//! The body of the `store` fuzz target (features `arbitrary` and `testing`): a ring of four
//! nodes with storage layers, whose first node is fed arbitrary storage messages (raw bytes
//! and well-formed messages with arbitrary fields, from any of the nodes or from strangers,
//! routed or direct), interleaved with its own puts, gets and deletes and with time passing.
//!
//! Checked after every step: no panic, and memory bounded: the records held stay within the
//! quota, and the operations, writes and reads in flight within what the steps could start.

use core::time::Duration;

use arbitrary::{Arbitrary, Unstructured};
use bytes::Bytes;

use crate::harness::Harness;
use crate::id::NodeId;
use crate::output::{Delivery, Output};
use crate::rng::Rng;

use super::msg::{Blob, Code, StoreMsg, WireRecord, DIGEST_BUCKETS};
use super::record::Version;
use super::{StoreConfig, STORE_PURPOSE};

/// Steps per input at most.
pub const MAX_STEPS: usize = 64;
/// The quota of the fuzzed stores.
pub const QUOTA: u64 = 16 << 10;
/// Largest value the fuzzed stores accept.
pub const MAX_VALUE: usize = 512;

/// Runs one input. See the [module documentation](self).
///
/// # Panics
/// If the store panics or a bound is broken (that is the finding).
pub fn store(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let cfg = StoreConfig::default().with_max_value_size(MAX_VALUE).with_quota(QUOTA);
    let mut h = Harness::new(7);
    h.enable_store(cfg);
    let mut rng = Rng::new(7);
    h.grow(4, &mut rng, None);
    h.run_for(Duration::from_secs(5));
    let ids: Vec<NodeId> = (0..4).map(|i| h.node(i).id()).collect();
    let mut started = 0usize;
    for step in 0..MAX_STEPS {
        if u.is_empty() {
            break;
        }
        let Ok(kind) = u8::arbitrary(&mut u) else { break };
        match kind % 6 {
            0 | 1 => {
                let payload = if kind % 6 == 0 {
                    let len = usize::from(u8::arbitrary(&mut u).unwrap_or(0)) * 8;
                    Bytes::from(u.bytes(len.min(u.len())).unwrap_or(&[]).to_vec())
                } else {
                    message(&mut u, &ids).encode()
                };
                let d = Delivery {
                    key: pick(&mut u, &ids),
                    purpose: STORE_PURPOSE,
                    origin: pick(&mut u, &ids),
                    hops: u8::arbitrary(&mut u).unwrap_or(0),
                    direct: bool::arbitrary(&mut u).unwrap_or(true),
                    intercepted: false,
                    payload,
                };
                h.store_op(0, |s, now, n| s.handle_output(now, n, Output::Deliver(d)));
            }
            2 => {
                let key = pick(&mut u, &ids);
                let len = usize::from(u16::arbitrary(&mut u).unwrap_or(0)) % (2 * MAX_VALUE);
                let value = Bytes::from(vec![step as u8; len]);
                let _ = h.store_op(0, |s, now, n| s.put(now, n, key, value, None));
                started += 1;
            }
            3 => {
                let key = pick(&mut u, &ids);
                let get = bool::arbitrary(&mut u).unwrap_or(true);
                let _ = h.store_op(0, |s, now, n| if get { s.get(now, n, key) } else { s.delete(now, n, key) });
                started += 1;
            }
            _ => h.run_for(Duration::from_millis(u64::from(u16::arbitrary(&mut u).unwrap_or(0)) * 4)),
        }
        for i in 0..4 {
            let s = h.store(i);
            assert!(s.used_bytes() <= QUOTA, "node {i} holds {} bytes, over the quota", s.used_bytes());
            assert!(s.pending_ops() <= started, "node {i}: {} operations in flight", s.pending_ops());
        }
    }
    // Past every operation's timeout: all have ended.
    h.run_for(Duration::from_secs(12));
    for i in 0..4 {
        assert_eq!(h.store(i).pending_ops(), 0, "node {i}: operations never ended");
        assert!(h.store(i).used_bytes() <= QUOTA);
    }
}

/// A key: one of the nodes' ids, one next to it, or any.
fn pick(u: &mut Unstructured<'_>, ids: &[NodeId]) -> NodeId {
    let x = u8::arbitrary(u).unwrap_or(0);
    let id = ids[usize::from(x) % ids.len()];
    match x / 64 {
        0 => id,
        1 => NodeId::from_u128(id.as_u128().wrapping_add(u128::from(x))),
        _ => NodeId::from_u128(u128::arbitrary(u).unwrap_or(0)),
    }
}

fn record(u: &mut Unstructured<'_>, ids: &[NodeId]) -> WireRecord {
    let version = Version { counter: u64::arbitrary(u).unwrap_or(0) % 8, writer: pick(u, ids) };
    let value = match u8::arbitrary(u).unwrap_or(0) % 3 {
        0 => None,
        1 => Some(Blob(Bytes::from(vec![1u8; usize::from(u8::arbitrary(u).unwrap_or(0))]))),
        _ => Some(Blob(Bytes::from(vec![2u8; MAX_VALUE + 1 + usize::from(u8::arbitrary(u).unwrap_or(0))]))),
    };
    let ttl_ms = Option::<u64>::arbitrary(u).unwrap_or(None);
    WireRecord { version, value, ttl_ms }
}

fn code(u: &mut Unstructured<'_>) -> Code {
    const CODES: [Code; 8] = [
        Code::Ok,
        Code::NotFound,
        Code::NotReplica,
        Code::Full,
        Code::RateLimited,
        Code::TooLarge,
        Code::Partial,
        Code::Backend,
    ];
    CODES[usize::from(u8::arbitrary(u).unwrap_or(0)) % CODES.len()]
}

/// A well-formed storage message with arbitrary fields (lists of up to 64 entries).
fn message(u: &mut Unstructured<'_>, ids: &[NodeId]) -> StoreMsg {
    let n = usize::from(u8::arbitrary(u).unwrap_or(0) % 64);
    let tag = u64::arbitrary(u).unwrap_or(0) % 16;
    let op = u64::arbitrary(u).unwrap_or(0);
    match u8::arbitrary(u).unwrap_or(0) % 12 {
        0 => StoreMsg::Put { op, value: record(u, ids).value, ttl_ms: Option::<u64>::arbitrary(u).unwrap_or(None) },
        1 => StoreMsg::PutDone {
            op,
            key: pick(u, ids),
            code: code(u),
            stored: u8::arbitrary(u).unwrap_or(0),
            wanted: u8::arbitrary(u).unwrap_or(0),
            version: record(u, ids).version,
        },
        2 => StoreMsg::Get { op },
        3 => StoreMsg::GetDone {
            op,
            key: pick(u, ids),
            code: code(u),
            record: Some(record(u, ids)),
            hops: u8::arbitrary(u).unwrap_or(0),
        },
        4 => StoreMsg::Replicate { tag, records: (0..n).map(|_| (pick(u, ids), record(u, ids))).collect() },
        5 => StoreMsg::Stored {
            tag,
            code: code(u),
            held: (0..n).map(|_| (pick(u, ids), record(u, ids).version)).collect(),
        },
        6 => StoreMsg::Fetch { tag: tag | u64::from(bool::arbitrary(u).unwrap_or(false)) << 63, keys: keys(u, ids, n) },
        7 => StoreMsg::Fetched { tag, records: (0..n).map(|_| (pick(u, ids), record(u, ids))).collect() },
        8 => StoreMsg::Digest { buckets: (0..DIGEST_BUCKETS).map(|_| u64::arbitrary(u).unwrap_or(0)).collect() },
        9 => StoreMsg::KeyList {
            mask: u16::arbitrary(u).unwrap_or(0),
            entries: (0..n)
                .map(|_| (pick(u, ids), record(u, ids).version, bool::arbitrary(u).unwrap_or(false)))
                .collect(),
        },
        10 => StoreMsg::Offer { entries: (0..n).map(|_| (pick(u, ids), record(u, ids).version)).collect() },
        _ => StoreMsg::Have { keys: keys(u, ids, n) },
    }
}

fn keys(u: &mut Unstructured<'_>, ids: &[NodeId], n: usize) -> Vec<NodeId> {
    (0..n).map(|_| pick(u, ids)).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_few_inputs_run() {
        super::store(&[]);
        super::store(&[1, 0, 4, 3, 9, 9, 9, 2, 5, 5, 5, 5, 1, 1, 7, 7, 2, 2, 2, 2]);
        let long: Vec<u8> = (0..2000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        super::store(&long);
    }
}
