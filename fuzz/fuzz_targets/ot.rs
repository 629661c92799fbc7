//! OT apply / transform / compose on arbitrary operations: no panic, failures are errors, and
//! the convergence invariant holds for every pair that fits the document.
#![no_main]
use libfuzzer_sys::fuzz_target;
use troop_server::ot::{Operation, Part};

fn op_from(bytes: &[u8]) -> Operation {
    let mut parts = Vec::new();
    for pair in bytes.chunks(2) {
        let (kind, n) = (pair[0], *pair.get(1).unwrap_or(&1) as i64);
        parts.push(match kind % 4 {
            0 => Part::Int(n),
            1 => Part::Int(-n),
            2 => Part::Insert(["a", "é", "😀", "xy"][n as usize % 4].repeat(1 + n as usize % 3)),
            _ => Part::Int(0),
        });
    }
    Operation::from(parts)
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let doc_len = data[0] as usize % 24;
    let doc: String = (0..doc_len).map(|k| ['a', 'é', '😀'][k % 3]).collect();
    let split = 1 + data[1] as usize % (data.len() - 1);
    let (a, b) = (op_from(&data[2..split.max(2)]), op_from(&data[split.max(2)..]));
    let (ra, rb) = (a.apply(&doc), b.apply(&doc));
    let tags = vec![b'0'; doc_len];
    let _ = a.apply_tags(&tags, b'1');
    let _ = a.cursor_after();
    match (ra, rb) {
        (Ok(da), Ok(db)) => {
            let (a2, b2) = Operation::transform(&a, &b).expect("ops on one document transform");
            assert_eq!(a2.apply(&db).expect("a' fits"), b2.apply(&da).expect("b' fits"));
            if let Ok(c) = Operation::compose(&a, &Operation::from(vec![Part::Int(da.chars().count() as i64)])) {
                assert_eq!(c.apply(&doc).expect("composed fits"), da);
            }
        }
        _ => {
            let _ = Operation::transform(&a, &b);
            let _ = Operation::compose(&a, &b);
        }
    }
});
