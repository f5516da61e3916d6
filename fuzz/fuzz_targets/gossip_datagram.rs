//! A gossip datagram: the codec at its datagram limit, then the SWIM state
//! machine (signatures pass with InsecureAuth, so the fuzzer reaches the
//! statements' rules: caps, incarnation bounds, refutation).
#![no_main]
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let _ = ringkv_gossip::proto::codec::decode(data, 2048);
    let (mut swim, now) = common::peer();
    let _ = swim.handle_datagram(now, data);
    swim.handle_timeout(now + std::time::Duration::from_secs(2));
    while swim.poll_transmit().is_some() {}
    while swim.poll_event().is_some() {}
});
