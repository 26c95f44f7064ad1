use super::*;
use proptest::prelude::*;

fn opcode() -> impl Strategy<Value = OpCode> {
    prop_oneof![
        Just(OpCode::Continuation),
        Just(OpCode::Text),
        Just(OpCode::Binary),
        Just(OpCode::Close),
        Just(OpCode::Ping),
        Just(OpCode::Pong),
    ]
}

fn length_for(op: OpCode) -> BoxedStrategy<u64> {
    if op.is_control() {
        (0u64..=125).boxed()
    } else {
        prop_oneof![
            0u64..=130,
            Just(125u64),
            Just(126),
            Just(65535),
            Just(65536),
            65530u64..65542,
            0u64..(1 << 63),
        ]
        .boxed()
    }
}

fn header() -> impl Strategy<Value = FrameHeader> {
    opcode().prop_flat_map(|op| {
        (
            any::<bool>(),
            0u8..8,
            proptest::option::of(any::<[u8; 4]>()),
            length_for(op),
        )
            .prop_map(move |(fin, rsv, mask, len)| FrameHeader {
                fin: fin || op.is_control(),
                rsv,
                opcode: op,
                mask,
                len,
            })
    })
}

proptest! {
    // Miri interprets every case; a few still reach the code under it.
    #![proptest_config(ProptestConfig::with_cases(if cfg!(miri) { 4 } else { 256 }))]

    #[test]
    fn round_trip(h in header()) {
        let mut buf = [0u8; MAX_HEADER_LEN];
        let n = h.encode_into(&mut buf);
        prop_assert_eq!(n, h.encoded_len());
        prop_assert_eq!(decode(&buf[..n]).unwrap(), Decoded::Header(h, n));
        // Every strict prefix asks for more, never errors and never over-asks.
        for cut in 0..n {
            match decode(&buf[..cut]).unwrap() {
                Decoded::Need(k) => prop_assert!(k > cut && k <= n),
                Decoded::Header(..) => prop_assert!(false, "header from {} of {} bytes", cut, n),
            }
        }
    }

    #[test]
    fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..20)) {
        let _ = decode(&bytes);
    }
}

#[test]
fn length_class_boundaries() {
    for (len, n) in [(0, 2), (125, 2), (126, 4), (65535, 4), (65536, 10)] {
        assert_eq!(
            FrameHeader::server(OpCode::Binary, len).encoded_len(),
            n,
            "{len}"
        );
    }
}

#[test]
fn rfc6455_section_5_7_examples() {
    // A single-frame unmasked text message "Hello".
    let d = decode(&[0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]).unwrap();
    assert_eq!(d, Decoded::Header(FrameHeader::server(OpCode::Text, 5), 2));
    // A single-frame masked text message "Hello".
    let d = decode(&[0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d]).unwrap();
    let Decoded::Header(h, 6) = d else {
        panic!("{d:?}")
    };
    assert_eq!(h.mask, Some([0x37, 0xfa, 0x21, 0x3d]));
    // A fragmented unmasked text message: "Hel" then "lo".
    let Decoded::Header(h, 2) = decode(&[0x01, 0x03]).unwrap() else {
        panic!()
    };
    assert!(!h.fin && h.opcode == OpCode::Text);
    let Decoded::Header(h, 2) = decode(&[0x80, 0x02]).unwrap() else {
        panic!()
    };
    assert!(h.fin && h.opcode == OpCode::Continuation);
    // 256 bytes binary message in a single unmasked frame.
    let d = decode(&[0x82, 0x7E, 0x01, 0x00]).unwrap();
    assert_eq!(
        d,
        Decoded::Header(FrameHeader::server(OpCode::Binary, 256), 4)
    );
    // 64KiB binary message in a single unmasked frame.
    let d = decode(&[0x82, 0x7F, 0, 0, 0, 0, 0, 1, 0, 0]).unwrap();
    assert_eq!(
        d,
        Decoded::Header(FrameHeader::server(OpCode::Binary, 65536), 10)
    );
}

#[test]
fn header_rule_violations() {
    assert_eq!(decode(&[0x83, 0x80]), Err(ProtocolError::ReservedOpcode(3)));
    assert_eq!(
        decode(&[0x8B, 0x80]),
        Err(ProtocolError::ReservedOpcode(0xB))
    );
    assert_eq!(
        decode(&[0x09, 0x80]),
        Err(ProtocolError::FragmentedControlFrame)
    );
    assert_eq!(
        decode(&[0x89, 0xFE]),
        Err(ProtocolError::ControlFrameTooLong)
    );
    assert_eq!(
        decode(&[0x82, 0x7E, 0, 125]),
        Err(ProtocolError::NonMinimalLength)
    );
    assert_eq!(
        decode(&[0x82, 0x7F, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF]),
        Err(ProtocolError::NonMinimalLength)
    );
    assert_eq!(
        decode(&[0x82, 0x7F, 0x80, 0, 0, 0, 0, 0, 0, 0]),
        Err(ProtocolError::LengthTopBit)
    );
    // RSV bits are reported, not rejected, by the codec.
    let Decoded::Header(h, _) = decode(&[0xF2, 0x00]).unwrap() else {
        panic!()
    };
    assert_eq!(h.rsv, 7);
}
