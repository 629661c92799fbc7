//! The Troop message decoder: no panic, bounded buffering, and every decoded message encodes to
//! bytes that decode to the same message (what makes relays byte-exact).
#![no_main]
use libfuzzer_sys::fuzz_target;
use troop_server::frame::Decoder;

fuzz_target!(|data: &[u8]| {
    // The first byte picks where the stream is split into two reads.
    let (cut, bytes) = match data.split_first() {
        Some((c, rest)) => (*c as usize % (rest.len() + 1), rest),
        None => return,
    };
    let mut d = Decoder::new(4096);
    let mut msgs = Vec::new();
    for chunk in [&bytes[..cut], &bytes[cut..]] {
        d.feed(chunk);
        loop {
            match d.next_message() {
                Ok(Some(m)) => msgs.push(m),
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
    for m in msgs {
        let wire = m.encode();
        assert!(wire.is_ascii());
        let mut again = Decoder::new(usize::MAX);
        again.feed(wire.as_bytes());
        let back = again.next_message().expect("re-decodes").expect("complete");
        assert_eq!(back.encode(), wire);
    }
});
