//! Reads dnstap output: what a Frame Streams file captured by `fstrm_capture` holds.

/// The `socket_protocol` (Message field 3) of every dnstap message (Dnstap field
/// 14) in a Frame Streams file's data frames.
pub fn socket_protocols(mut file: &[u8]) -> Vec<u64> {
    fn varint(b: &mut &[u8]) -> u64 {
        let mut v = 0;
        for shift in (0..64).step_by(7) {
            let byte = b[0];
            *b = &b[1..];
            v |= u64::from(byte & 0x7f) << shift;
            if byte < 0x80 {
                break;
            }
        }
        v
    }
    /// (field, varint value or length-delimited bytes) of a protobuf message.
    fn fields(mut b: &[u8]) -> Vec<(u64, u64, &[u8])> {
        let mut out = Vec::new();
        while !b.is_empty() {
            let key = varint(&mut b);
            match key & 7 {
                0 => out.push((key >> 3, varint(&mut b), &b[..0])),
                2 => {
                    let len = varint(&mut b) as usize;
                    out.push((key >> 3, 0, &b[..len]));
                    b = &b[len..];
                }
                1 => b = &b[8..],
                5 => b = &b[4..],
                other => panic!("wire type {other}"),
            }
        }
        out
    }
    let mut protocols = Vec::new();
    let u32_at = |b: &mut &[u8]| {
        let v = u32::from_be_bytes(b[..4].try_into().unwrap()) as usize;
        *b = &b[4..];
        v
    };
    while !file.is_empty() {
        let len = u32_at(&mut file);
        if len == 0 {
            let control = u32_at(&mut file);
            file = &file[control..];
            continue;
        }
        let (frame, rest) = file.split_at(len);
        file = rest;
        for (_, _, message) in fields(frame).into_iter().filter(|f| f.0 == 14) {
            protocols.extend(fields(message).iter().filter(|f| f.0 == 3).map(|f| f.1));
        }
    }
    protocols
}
