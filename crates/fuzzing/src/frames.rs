//! `frames`: the host's [`FrameDecoder`] (crates/gate/src/protocol.rs), fed
//! what a container's stdout carries (the gate's frames, or anything a broken
//! or hostile container writes).
//!
//! Properties:
//! - the bytes in one chunk, one byte at a time, or in chunks of sizes drawn
//!   from the input: the same frames, then the same error or the same bytes
//!   pending;
//! - each frame decoded is its own encoding ([`encode_frame`] gives back the
//!   bytes it came from; text frames up to invalid UTF-8 replaced);
//! - the buffer never holds more than 64 KiB of consumed bytes besides what is
//!   pending, and what is pending after the decoder has said `None` is less
//!   than one frame of the largest size allowed;
//! - the bytes as a list of frames (via `arbitrary`, large outputs included):
//!   encoded and decoded in arbitrary chunks, the same list.

use crate::Mix;
use arbitrary::Unstructured;
use warmpool_gate::protocol::{
    encode_frame, ExitStatus, Frame, FrameDecoder, FrameError, FRAME_HEADER_LEN, MAX_FRAME_PAYLOAD,
};

/// Consumed bytes the decoder may keep before it compacts (see `push`).
const COMPACT_AFTER: usize = 64 * 1024;

/// What a stream decodes to: its frames (with the bytes each came from), then
/// an error, or else the bytes left pending.
#[derive(Debug, PartialEq, Eq)]
struct Decoded {
    frames: Vec<(Frame, usize)>,
    end: Result<usize, FrameError>,
}

fn decode(chunks: impl Iterator<Item = impl AsRef<[u8]>>) -> Decoded {
    let mut d = FrameDecoder::new();
    let mut frames = Vec::new();
    for chunk in chunks {
        let chunk = chunk.as_ref();
        d.push(chunk);
        assert!(
            d.buffered() - d.pending() <= COMPACT_AFTER,
            "{} bytes buffered for {} pending",
            d.buffered(),
            d.pending()
        );
        loop {
            let before = d.pending();
            match d.next_frame() {
                Ok(Some(f)) => frames.push((f, before - d.pending())),
                Ok(None) => break,
                Err(e) => {
                    return Decoded {
                        frames,
                        end: Err(e),
                    }
                }
            }
        }
        assert!(
            d.pending() < FRAME_HEADER_LEN + MAX_FRAME_PAYLOAD as usize,
            "{} bytes pending and no frame",
            d.pending()
        );
    }
    Decoded {
        frames,
        end: Ok(d.pending()),
    }
}

pub fn run(data: &[u8]) {
    raw(data);
    structured(data);
}

fn raw(data: &[u8]) {
    let whole = decode(std::iter::once(data));
    assert_eq!(whole, decode(data.chunks(1)), "byte at a time");
    let mut mix = Mix::new(data);
    let mut chunks = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let (c, r) = rest.split_at(mix.size(13).min(rest.len()));
        chunks.push(c);
        rest = r;
    }
    assert_eq!(whole, decode(chunks.into_iter()), "in chunks");

    let mut at = 0;
    for (frame, len) in &whole.frames {
        let bytes = &data[at..at + len];
        at += len;
        let encoded = encode_frame(frame);
        match frame {
            Frame::Ready(_) | Frame::StartFailed(_)
                if std::str::from_utf8(&bytes[5..]).is_err() =>
            {
                assert_eq!(encoded[0], bytes[0]);
            }
            // A report that is not UTF-8 is decoded lossily: kind and status stay.
            Frame::Reset { .. } if std::str::from_utf8(&bytes[6..]).is_err() => {
                assert_eq!((encoded[0], encoded[5]), (bytes[0], bytes[5]));
            }
            _ => assert_eq!(encoded, bytes, "{frame:?} is not its own encoding"),
        }
    }
    if let Ok(pending) = whole.end {
        assert_eq!(at + pending, data.len());
    }
}

/// Largest single output payload generated: past the decoder's compaction
/// threshold, so that path runs.
const BIG: usize = 3 * COMPACT_AFTER / 2;

fn arbitrary_frame(u: &mut Unstructured) -> arbitrary::Result<Frame> {
    Ok(match u.int_in_range(0..=9u8)? {
        0 => Frame::Ready(u.arbitrary()?),
        1 => Frame::Started(u.arbitrary()?),
        2 | 3 => {
            let payload = if u.ratio(1, 8)? {
                // Large output, cheaply: one byte repeated.
                vec![u.arbitrary::<u8>()?; u.int_in_range(COMPACT_AFTER / 2..=BIG)?]
            } else {
                u.arbitrary()?
            };
            if u.arbitrary()? {
                Frame::Stdout(payload)
            } else {
                Frame::Stderr(payload)
            }
        }
        4 => Frame::StartFailed(u.arbitrary()?),
        5 => Frame::Exit(ExitStatus::Code(u.arbitrary()?)),
        6 => Frame::Exit(ExitStatus::Signal(u.arbitrary()?)),
        7 => Frame::Signal(u.arbitrary()?),
        8 => Frame::Reset {
            ok: u.arbitrary()?,
            report: u.arbitrary()?,
        },
        _ => Frame::Oom(u.arbitrary()?),
    })
}

fn structured(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let mut frames = Vec::new();
    let mut stream = Vec::new();
    while stream.len() < 8 * BIG && !u.is_empty() {
        let Ok(f) = arbitrary_frame(&mut u) else {
            break;
        };
        stream.extend_from_slice(&encode_frame(&f));
        frames.push(f);
    }
    let mut mix = Mix::new(data);
    let mut chunks = Vec::new();
    let mut rest = &stream[..];
    while !rest.is_empty() {
        // Mostly small reads, now and then a large one.
        let max = if mix.next().is_multiple_of(4) {
            2 * BIG
        } else {
            4096
        };
        let (c, r) = rest.split_at(mix.size(max).min(rest.len()));
        chunks.push(c);
        rest = r;
    }
    let got = decode(chunks.into_iter());
    assert_eq!(got.end, Ok(0));
    let got: Vec<Frame> = got.frames.into_iter().map(|(f, _)| f).collect();
    assert!(got == frames, "frames changed on the way");
}
