//! The generated request: its framing from random parts, the reference model
//! that says whether it must be proxied, and the encoder of its bytes.

use proptest::prelude::*;

use super::upstream::parse;

pub(crate) const SMUGGLED: &[u8] = b"GET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n";

/// What the reference model says of a framing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Verdict {
    /// RFC 9112 framing, unambiguous: must be proxied.
    Valid,
    /// Allowed either way (a server MAY accept it): proxied as meant, or refused.
    Doubtful,
    /// Must not be proxied.
    Invalid,
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum Length {
    Exact,
    /// Whitespace around the value (OWS, allowed).
    Padded,
    /// The same value twice (RFC 9112 §6.3 lets a recipient accept it).
    DuplicateSame,
    /// Two different values.
    DuplicateDiffer,
    /// `n, n` in one field.
    List,
    /// `+n`.
    Plus,
    /// `-1`.
    Negative,
    /// One byte less than the body: the rest is not part of this request.
    Short,
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum Coding {
    Chunked,
    Upper,
    LeadingSpace,
    TrailingTab,
    ChunkedChunked,
    ChunkedIdentity,
    IdentityChunked,
    GzipChunked,
    XChunked,
    Quoted,
    TwoLines,
    SpaceBeforeColon,
    ObsFold,
}

/// How the first chunk-size line is written.
#[derive(Debug, Clone, Copy)]
pub(crate) enum SizeLine {
    Lower,
    Upper,
    LeadingZeros,
    Extension,
    TrailingSpace,
    Overflow,
    Garbage,
    HexPrefix,
    Empty,
    ExtensionBareLf,
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum Extra {
    None,
    ObsFold,
    Nul,
    SpaceInName,
}

#[derive(Debug, Clone)]
pub(crate) struct Case {
    pub(crate) method: &'static str,
    pub(crate) http10: bool,
    /// `Connection: close` and the smuggled request line after the body; without it, the
    /// request ends exactly where the model says, and a refusal must close by itself.
    pub(crate) close: bool,
    pub(crate) body: Vec<u8>,
    pub(crate) length: Option<Length>,
    pub(crate) coding: Option<Coding>,
    pub(crate) chunks: Vec<usize>,
    pub(crate) size_line: SizeLine,
    pub(crate) bare_lf_chunks: bool,
    pub(crate) bare_lf_head: bool,
    pub(crate) extra: Extra,
}

impl Case {
    /// The verdict, and the body the client means if the request is proxied.
    pub(crate) fn model(&self) -> (Verdict, Vec<u8>) {
        let mut verdict = Verdict::Valid;
        let mut body = self.body.clone();
        let worst = |v: &mut Verdict, w: Verdict| *v = (*v).max(w);
        if let Some(coding) = self.coding {
            worst(
                &mut verdict,
                match coding {
                    Coding::Chunked | Coding::Upper => Verdict::Valid,
                    Coding::LeadingSpace | Coding::TrailingTab => Verdict::Doubtful,
                    _ => Verdict::Invalid,
                },
            );
            if self.http10 {
                worst(&mut verdict, Verdict::Invalid);
            }
            if self.length.is_some() {
                // RFC 9112 §6.3: reject, or read by the chunked coding (whatever the
                // length says) and close. hyper removes the length and does the latter.
                worst(&mut verdict, Verdict::Doubtful);
            }
            worst(
                &mut verdict,
                match self.size_line {
                    SizeLine::Lower
                    | SizeLine::Upper
                    | SizeLine::LeadingZeros
                    | SizeLine::Extension => Verdict::Valid,
                    SizeLine::TrailingSpace => Verdict::Doubtful,
                    _ => Verdict::Invalid,
                },
            );
            if self.bare_lf_chunks {
                worst(&mut verdict, Verdict::Invalid);
            }
        } else if let Some(length) = self.length {
            worst(
                &mut verdict,
                match length {
                    Length::Exact | Length::Padded | Length::Short => Verdict::Valid,
                    Length::DuplicateSame => Verdict::Doubtful,
                    _ => Verdict::Invalid,
                },
            );
            if matches!(length, Length::Short) {
                body.pop();
            }
        } else {
            // No framing: no body; what follows is not part of this request.
            body.clear();
        }
        if self.bare_lf_head {
            worst(&mut verdict, Verdict::Doubtful);
        }
        if !matches!(self.extra, Extra::None) {
            worst(&mut verdict, Verdict::Invalid);
        }
        (verdict, body)
    }

    pub(crate) fn bytes(&self) -> Vec<u8> {
        let eol = if self.bare_lf_head { "\n" } else { "\r\n" };
        let version = if self.http10 { "HTTP/1.0" } else { "HTTP/1.1" };
        let mut head = vec![
            format!("{} /p {version}", self.method),
            "Host: t".to_owned(),
        ];
        if self.close {
            head.push("Connection: close".to_owned());
        }
        let n = self.body.len();
        match self.length {
            None => {}
            Some(Length::Exact) => head.push(format!("Content-Length: {n}")),
            Some(Length::Padded) => head.push(format!("Content-Length:   {n} \t")),
            Some(Length::DuplicateSame) => {
                head.push(format!("Content-Length: {n}"));
                head.push(format!("Content-Length: {n}"));
            }
            Some(Length::DuplicateDiffer) => {
                head.push(format!("Content-Length: {n}"));
                head.push(format!("Content-Length: {}", n + 1));
            }
            Some(Length::List) => head.push(format!("Content-Length: {n}, {n}")),
            Some(Length::Plus) => head.push(format!("Content-Length: +{n}")),
            Some(Length::Negative) => head.push("Content-Length: -1".to_owned()),
            Some(Length::Short) => head.push(format!("Content-Length: {}", n.saturating_sub(1))),
        }
        if let Some(coding) = self.coding {
            let te = |v: &str| format!("Transfer-Encoding: {v}");
            match coding {
                Coding::Chunked => head.push(te("chunked")),
                Coding::Upper => head.push(te("CHUNKED")),
                Coding::LeadingSpace => head.push(te("  chunked")),
                Coding::TrailingTab => head.push(te("chunked\t")),
                Coding::ChunkedChunked => head.push(te("chunked, chunked")),
                Coding::ChunkedIdentity => head.push(te("chunked, identity")),
                Coding::IdentityChunked => head.push(te("identity, chunked")),
                Coding::GzipChunked => head.push(te("gzip, chunked")),
                Coding::XChunked => head.push(te("xchunked")),
                Coding::Quoted => head.push(te("\"chunked\"")),
                Coding::TwoLines => {
                    head.push(te("chunked"));
                    head.push(te("chunked"));
                }
                Coding::SpaceBeforeColon => head.push("Transfer-Encoding : chunked".to_owned()),
                Coding::ObsFold => head.push(format!("Transfer-Encoding: identity{eol} chunked")),
            }
        }
        match self.extra {
            Extra::None => {}
            Extra::ObsFold => head.push(format!("X-Folded: a{eol} b")),
            Extra::Nul => head.push("X-Nul: a\0b".to_owned()),
            Extra::SpaceInName => head.push("X Bad: a".to_owned()),
        }
        let mut out = Vec::new();
        for line in head {
            out.extend_from_slice(line.as_bytes());
            out.extend_from_slice(eol.as_bytes());
        }
        out.extend_from_slice(eol.as_bytes());
        if self.coding.is_some() {
            out.extend(self.chunked_body());
        } else {
            out.extend_from_slice(&self.body);
        }
        if self.close {
            out.extend_from_slice(SMUGGLED);
        }
        out
    }

    /// The body in chunks of the generated sizes (the rest in one last chunk), the first
    /// size line written as `size_line` says.
    pub(crate) fn chunked_body(&self) -> Vec<u8> {
        let eol: &[u8] = if self.bare_lf_chunks { b"\n" } else { b"\r\n" };
        let mut pieces: Vec<&[u8]> = Vec::new();
        let mut rest = &self.body[..];
        for &size in &self.chunks {
            if rest.is_empty() {
                break;
            }
            let (a, b) = rest.split_at(size.min(rest.len()));
            pieces.push(a);
            rest = b;
        }
        if !rest.is_empty() {
            pieces.push(rest);
        }
        pieces.push(b"");
        let mut out = Vec::new();
        for (i, piece) in pieces.iter().enumerate() {
            let n = piece.len();
            let line = if i > 0 {
                format!("{n:x}")
            } else {
                match self.size_line {
                    SizeLine::Lower => format!("{n:x}"),
                    SizeLine::Upper => format!("{n:X}"),
                    SizeLine::LeadingZeros => format!("000{n:x}"),
                    SizeLine::Extension => format!("{n:x};name=\"v a\";x"),
                    SizeLine::TrailingSpace => format!("{n:x} "),
                    SizeLine::Overflow => "ffffffffffffffffff1".to_owned(),
                    SizeLine::Garbage => "zz".to_owned(),
                    SizeLine::HexPrefix => format!("0x{n:x}"),
                    SizeLine::Empty => String::new(),
                    SizeLine::ExtensionBareLf => format!("{n:x};a\nb"),
                }
            };
            out.extend_from_slice(line.as_bytes());
            out.extend_from_slice(eol);
            if n > 0 {
                out.extend_from_slice(piece);
                out.extend_from_slice(eol);
            }
        }
        // The empty trailer section.
        out.extend_from_slice(eol);
        out
    }
}

pub(crate) fn case() -> impl Strategy<Value = Case> {
    use Coding as C;
    use Length as L;
    use SizeLine as S;
    let body_byte = prop::sample::select(b"ab0\r\n;:GET /smuggled".to_vec());
    let body = (
        prop::collection::vec(body_byte, 0..40),
        any::<bool>(),
        any::<prop::sample::Index>(),
    )
        .prop_map(|(mut body, smuggle, at)| {
            if smuggle {
                let at = at.index(body.len() + 1);
                body.splice(at..at, SMUGGLED.iter().copied());
            }
            body
        });
    let length = prop::option::weighted(
        0.5,
        prop::sample::select(vec![
            L::Exact,
            L::Padded,
            L::DuplicateSame,
            L::DuplicateDiffer,
            L::List,
            L::Plus,
            L::Negative,
            L::Short,
        ]),
    );
    let coding = prop::option::weighted(
        0.6,
        prop_oneof![
            3 => Just(C::Chunked),
            1 => prop::sample::select(vec![
                C::Upper,
                C::LeadingSpace,
                C::TrailingTab,
                C::ChunkedChunked,
                C::ChunkedIdentity,
                C::IdentityChunked,
                C::GzipChunked,
                C::XChunked,
                C::Quoted,
                C::TwoLines,
                C::SpaceBeforeColon,
                C::ObsFold,
            ]),
        ],
    );
    let size_line = prop_oneof![
        3 => Just(S::Lower),
        1 => prop::sample::select(vec![
            S::Upper,
            S::LeadingZeros,
            S::Extension,
            S::TrailingSpace,
            S::Overflow,
            S::Garbage,
            S::HexPrefix,
            S::Empty,
            S::ExtensionBareLf,
        ]),
    ];
    let extra = prop_oneof![
        6 => Just(Extra::None),
        1 => prop::sample::select(vec![Extra::ObsFold, Extra::Nul, Extra::SpaceInName]),
    ];
    (
        prop::sample::select(vec!["POST", "PUT", "DELETE", "OPTIONS", "GET"]),
        prop::bool::weighted(0.1),
        any::<bool>(),
        body,
        length,
        coding,
        prop::collection::vec(1usize..16, 0..4),
        size_line,
        (prop::bool::weighted(0.1), prop::bool::weighted(0.1), extra),
    )
        .prop_map(
            |(
                method,
                http10,
                close,
                body,
                length,
                coding,
                chunks,
                size_line,
                (lf1, lf2, extra),
            )| {
                let mut case = Case {
                    method,
                    http10,
                    close,
                    body,
                    length,
                    coding,
                    chunks,
                    size_line,
                    bare_lf_chunks: lf1,
                    bare_lf_head: lf2,
                    extra,
                };
                // Where bytes follow the request as the model reads it, only
                // `Connection: close` keeps them from being a second (real) request.
                let unframed = case.length.is_none() && case.coding.is_none();
                if matches!(case.length, Some(Length::Short)) || unframed {
                    case.close = true;
                }
                case
            },
        )
}

/// The model on the known smuggling vectors it covers, so that a wrong model cannot make
/// the property vacuous.
#[test]
fn the_model_agrees_with_the_known_vectors() {
    let base = Case {
        method: "POST",
        http10: false,
        close: true,
        body: b"hello".to_vec(),
        length: None,
        coding: None,
        chunks: vec![],
        size_line: SizeLine::Lower,
        bare_lf_chunks: false,
        bare_lf_head: false,
        extra: Extra::None,
    };
    let with = |f: fn(&mut Case)| {
        let mut c = base.clone();
        f(&mut c);
        c.model().0
    };
    assert_eq!(with(|c| c.length = Some(Length::Exact)), Verdict::Valid);
    assert_eq!(with(|c| c.coding = Some(Coding::Chunked)), Verdict::Valid);
    // RFC 9112 §6.3: CL + TE is refused, or read as chunked (the conformance table checks
    // that the connection is closed after it).
    assert_eq!(
        with(|c| {
            c.length = Some(Length::Negative);
            c.coding = Some(Coding::Chunked);
        }),
        Verdict::Doubtful
    );
    assert_eq!(
        with(|c| {
            c.http10 = true;
            c.coding = Some(Coding::Chunked);
        }),
        Verdict::Invalid
    );
    // A Transfer-Encoding other than one `chunked`; a bad Content-Length (RFC 9112 §6.3).
    for coding in [
        Coding::ChunkedChunked,
        Coding::GzipChunked,
        Coding::XChunked,
    ] {
        let mut c = base.clone();
        c.coding = Some(coding);
        assert_eq!(c.model().0, Verdict::Invalid, "{coding:?}");
    }
    for length in [
        Length::DuplicateDiffer,
        Length::Plus,
        Length::Negative,
        Length::List,
    ] {
        let mut c = base.clone();
        c.length = Some(length);
        assert_eq!(c.model().0, Verdict::Invalid, "{length:?}");
    }
    // obs-fold (RFC 9112 §5.2) and a chunk size that overflows (§7.1).
    assert_eq!(with(|c| c.extra = Extra::ObsFold), Verdict::Invalid);
    assert_eq!(
        with(|c| {
            c.coding = Some(Coding::Chunked);
            c.size_line = SizeLine::Overflow;
        }),
        Verdict::Invalid
    );
    // The encoder writes what a strict parser reads back.
    let mut c = base.clone();
    c.coding = Some(Coding::Chunked);
    c.chunks = vec![2, 1];
    c.close = false;
    let bytes = c.bytes();
    let (reqs, trailing) = parse(&bytes);
    assert_eq!((reqs.len(), trailing), (1, 0));
    assert_eq!(reqs[0].body, b"hello");
}
