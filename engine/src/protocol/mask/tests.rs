//! Every implementation against a naive byte loop: exhaustively for short lengths at every
//! phase and alignment, and by proptest for random buffers cut at random points.

#![forbid(unsafe_code)]

use proptest::prelude::*;

use super::{Impl, SIMD_THRESHOLD, scalar, unmask, unmask_with};

/// The obvious byte loop, the oracle for everything else.
fn reference(buf: &mut [u8], key: [u8; 4], phase: usize) -> usize {
    for (i, b) in buf.iter_mut().enumerate() {
        *b ^= key[(phase + i) % 4];
    }
    (phase + buf.len()) % 4
}

fn bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// Runs `imp` on `buf` and checks buffer and returned phase against [`reference`].
fn check(imp: Impl, buf: &[u8], key: [u8; 4], phase: usize) {
    let mut want = buf.to_vec();
    let want_phase = reference(&mut want, key, phase);
    let mut got = buf.to_vec();
    let got_phase = unmask_with(imp, &mut got, key, phase).expect("available");
    assert_eq!(got, want, "{imp:?} len {} phase {phase}", buf.len());
    assert_eq!(
        got_phase,
        want_phase,
        "{imp:?} len {} phase {phase}",
        buf.len()
    );
}

#[test]
fn scalar_is_always_available_and_selected_is_available() {
    let available = Impl::available();
    assert_eq!(available.first(), Some(&Impl::Scalar));
    assert!(available.contains(&Impl::selected()));
    assert_eq!(available.last(), Some(&Impl::selected()));
    #[cfg(all(target_arch = "x86_64", not(miri)))]
    assert!(available.contains(&Impl::Sse2));
    #[cfg(all(target_arch = "aarch64", not(miri)))]
    assert!(available.contains(&Impl::Neon));
    // Under Miri the SIMD kernels are compiled out.
    #[cfg(miri)]
    assert_eq!(available, [Impl::Scalar]);
}

#[test]
fn unavailable_impl_is_none_and_leaves_buffer() {
    for imp in Impl::ALL {
        if !Impl::available().contains(&imp) {
            let mut buf = bytes(100, 7);
            assert_eq!(unmask_with(imp, &mut buf, KEY, 0), None);
            assert_eq!(buf, bytes(100, 7));
        }
    }
}

#[test]
fn rfc6455_hello_example() {
    // RFC 6455 §5.7: a masked "Hello" from a client.
    for imp in Impl::available() {
        let mut payload = [0x7f, 0x9f, 0x4d, 0x51, 0x58];
        assert_eq!(unmask_with(imp, &mut payload, KEY, 0), Some(1));
        assert_eq!(&payload, b"Hello");
    }
}

#[test]
fn every_length_0_to_67_at_every_phase() {
    for imp in Impl::available() {
        for len in 0..=67 {
            let data = bytes(len, len as u64 + 1);
            for phase in 0..=3 {
                check(imp, &data, KEY, phase);
            }
        }
    }
}

#[test]
#[cfg_attr(
    miri,
    ignore = "compares the SIMD kernels, which Miri leaves out; slow there"
)]
fn dispatch_matches_reference_around_threshold() {
    for len in (0..=67).chain([SIMD_THRESHOLD * 8 + 5, 4096 + 3]) {
        let data = bytes(len, 99);
        for phase in 0..=3 {
            let mut want = data.clone();
            let want_phase = reference(&mut want, KEY, phase);
            let mut got = data.clone();
            assert_eq!(unmask(&mut got, KEY, phase), want_phase);
            assert_eq!(got, want, "len {len} phase {phase}");
        }
    }
}

#[test]
fn phase_is_taken_modulo_4_even_near_overflow() {
    let data = bytes(45, 3);
    for imp in Impl::available() {
        for phase in [4, 5, 6, 7, usize::MAX - 3, usize::MAX - 1, usize::MAX] {
            let mut want = data.clone();
            let want_phase = reference(&mut want, KEY, phase % 4);
            let mut got = data.clone();
            assert_eq!(unmask_with(imp, &mut got, KEY, phase), Some(want_phase));
            assert_eq!(got, want, "{imp:?} phase {phase}");
        }
    }
}

#[test]
#[cfg_attr(
    miri,
    ignore = "compares the SIMD kernels, which Miri leaves out; slow there"
)]
fn unaligned_starting_offsets_1_to_31() {
    let whole = bytes(512, 11);
    for imp in Impl::available() {
        for offset in 1..=31 {
            for len in [
                0, 1, 15, 16, 17, 31, 32, 33, 63, 64, 65, 127, 128, 129, 200, 480,
            ] {
                for phase in 0..=3 {
                    let mut want = whole.clone();
                    let want_phase = reference(&mut want[offset..offset + len], KEY, phase);
                    let mut got = whole.clone();
                    let got_phase = unmask_with(imp, &mut got[offset..offset + len], KEY, phase);
                    assert_eq!(got_phase, Some(want_phase));
                    // Bytes outside the slice are untouched, bytes inside match.
                    assert_eq!(got, want, "{imp:?} offset {offset} len {len} phase {phase}");
                }
            }
        }
    }
}

#[test]
fn unmasking_twice_restores() {
    let data = bytes(1000, 5);
    for imp in Impl::available() {
        let mut buf = data.clone();
        let p = unmask_with(imp, &mut buf, KEY, 2).expect("available");
        assert_eq!(p, (2 + 1000) % 4);
        assert_ne!(buf, data);
        unmask_with(imp, &mut buf, KEY, 2);
        assert_eq!(buf, data);
    }
}

proptest! {
    // Miri interprets every case; a few still reach the code under it.
    #![proptest_config(ProptestConfig::with_cases(if cfg!(miri) { 4 } else { 256 }))]

    /// Each implementation, in one call or in two calls continuing the phase, equals the
    /// reference, at any start offset.
    #[test]
    #[cfg_attr(miri, ignore = "compares the SIMD kernels, which Miri leaves out; slow there")]
    fn prop_impls_agree_whole_and_split(
        data in proptest::collection::vec(any::<u8>(), 0..4200),
        key in any::<[u8; 4]>(),
        phase in 0usize..4,
        offset in 0usize..32,
        split in any::<prop::sample::Index>(),
    ) {
        let offset = offset.min(data.len());
        let len = data.len() - offset;
        let split = split.index(len + 1);
        let mut want = data.clone();
        let want_phase = reference(&mut want[offset..], key, phase);

        for imp in Impl::available() {
            let mut whole = data.clone();
            prop_assert_eq!(unmask_with(imp, &mut whole[offset..], key, phase), Some(want_phase));
            prop_assert_eq!(&whole, &want, "{:?} whole", imp);

            let mut pieces = data.clone();
            let (a, b) = pieces[offset..].split_at_mut(split);
            let mid = unmask_with(imp, a, key, phase).expect("available");
            prop_assert_eq!(mid, (phase + split) % 4);
            prop_assert_eq!(unmask_with(imp, b, key, mid), Some(want_phase));
            prop_assert_eq!(&pieces, &want, "{:?} split at {}", imp, split);
        }

        let mut via_scalar = data.clone();
        prop_assert_eq!(scalar::unmask(&mut via_scalar[offset..], key, phase), want_phase);
        let mut via_dispatch = data;
        prop_assert_eq!(unmask(&mut via_dispatch[offset..], key, phase), want_phase);
        prop_assert_eq!(&via_scalar, &want);
        prop_assert_eq!(&via_dispatch, &want);
    }
}
