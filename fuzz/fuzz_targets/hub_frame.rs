//! The hub's frame decoder and request parser: no panic, no allocation beyond the frame's
//! announced (capped) length, whatever the bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(v) = troop_hub::wire::decode_frame(data) {
        let _ = troop_hub::wire::parse_request(&v);
        // Whatever decodes re-encodes to an ASCII frame of at most 9999 bytes (or is refused).
        if let Ok(frame) = troop_hub::wire::encode(&v) {
            assert!(frame.is_ascii() && frame.len() <= 4 + troop_hub::wire::MAX_BODY);
        }
    }
});
