//! A target whose certificate is itself one of the `ca` certificates.
//!
//! `openssl req -x509 -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -addext
//! subjectAltName=IP:127.0.0.1` is how most people make a certificate for an
//! internal service, and it makes one with `basicConstraints CA:TRUE`. Given
//! that file as the trusted CA, OpenSSL (hence Node, hence
//! configurable-http-proxy) accepts the certificate when the service presents
//! it: the certificate is a trust anchor, and the chain ends at once. webpki
//! refuses any CA certificate as a server's own (`CaUsedAsEndEntity`).
//!
//! [`AnchorVerifier`] wraps rustls's verifier and steps in on that error only:
//! the certificate is accepted when it is byte for byte one of the `ca`
//! certificates, its validity period covers now, and it names the server (a
//! DNS name or IP address in its subjectAltName). Every other certificate is
//! judged by rustls's verifier alone, and a refusal says which check failed.

use std::sync::Arc;
use std::time::Duration;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, OtherError};

/// rustls's verifier, and the certificates of the `ca` file it was given.
#[derive(Debug)]
pub(super) struct AnchorVerifier {
    inner: Arc<WebPkiServerVerifier>,
    anchors: Vec<CertificateDer<'static>>,
}

/// Why a CA certificate presented by a server is refused. rustls shows an
/// "other" certificate error by its `Debug`, so that says it too.
#[derive(thiserror::Error)]
#[error("a CA certificate presented as the server's own, and not one of the `ca` certificates")]
struct NotAnAnchor;

const SEQUENCE: u8 = 0x30;
/// `[0] EXPLICIT Version`.
const VERSION: u8 = 0xa0;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;

// === impl NotAnAnchor ===

impl std::fmt::Debug for NotAnAnchor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

// === impl AnchorVerifier ===

impl AnchorVerifier {
    pub(super) fn new(
        inner: Arc<WebPkiServerVerifier>,
        anchors: Vec<CertificateDer<'static>>,
    ) -> Self {
        Self { inner, anchors }
    }

    /// The checks rustls's verifier could not make on a trust anchor
    /// presented as the server's own certificate.
    fn verify_anchor(
        &self,
        cert: &CertificateDer<'_>,
        server_name: &ServerName<'_>,
        now: UnixTime,
    ) -> Result<(), rustls::Error> {
        if !self.anchors.iter().any(|a| a.as_ref() == cert.as_ref()) {
            return Err(CertificateError::Other(OtherError(Arc::new(NotAnAnchor))).into());
        }
        let (not_before, not_after) = validity(cert).ok_or(CertificateError::BadEncoding)?;
        if now < not_before {
            return Err(CertificateError::NotValidYetContext {
                time: now,
                not_before,
            }
            .into());
        }
        if now > not_after {
            return Err(CertificateError::ExpiredContext {
                time: now,
                not_after,
            }
            .into());
        }
        rustls::client::verify_server_name(&ParsedCertificate::try_from(cert)?, server_name)
    }
}

impl ServerCertVerifier for AnchorVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Err(err) if is_ca_used_as_end_entity(&err) => {
                self.verify_anchor(end_entity, server_name, now)?;
                Ok(ServerCertVerified::assertion())
            }
            result => result,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }

    fn root_hint_subjects(&self) -> Option<&[DistinguishedName]> {
        self.inner.root_hint_subjects()
    }
}

/// rustls reports webpki's `CaUsedAsEndEntity` as an "other" certificate error
/// carrying webpki's own error.
fn is_ca_used_as_end_entity(err: &rustls::Error) -> bool {
    matches!(
        err,
        rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(e)))
            if matches!(e.downcast_ref::<webpki::Error>(), Some(webpki::Error::CaUsedAsEndEntity))
    )
}

/// The validity period of a DER certificate (RFC 5280 §4.1.2.5):
/// `Certificate ::= SEQUENCE { tbsCertificate SEQUENCE { [0] version OPTIONAL,
/// serialNumber, signature, issuer, validity SEQUENCE { notBefore, notAfter },
/// … }, … }`. `None` when the DER is not that shape.
fn validity(der: &[u8]) -> Option<(UnixTime, UnixTime)> {
    let (cert, _) = expect(der, SEQUENCE)?;
    let (mut tbs, _) = expect(cert, SEQUENCE)?;
    if tbs.first() == Some(&VERSION) {
        tbs = element(tbs)?.2;
    }
    // The serial number, the signature algorithm and the issuer.
    for _ in 0..3 {
        tbs = element(tbs)?.2;
    }
    let (validity, _) = expect(tbs, SEQUENCE)?;
    let (not_before, rest) = time(validity)?;
    let (not_after, rest) = time(rest)?;
    rest.is_empty().then_some((not_before, not_after))
}

/// The contents of a DER element with this tag, and what follows it.
fn expect(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    match element(input)? {
        (t, contents, rest) if t == tag => Some((contents, rest)),
        _ => None,
    }
}

/// One DER element: its tag, its contents and what follows it (definite
/// lengths only, as DER has).
fn element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let (bytes, rest) = rest.split_at(n);
        let len = bytes
            .iter()
            .fold(0usize, |len, b| (len << 8) | usize::from(*b));
        (len, rest)
    };
    if rest.len() < len {
        return None;
    }
    let (contents, rest) = rest.split_at(len);
    Some((tag, contents, rest))
}

/// A `Time` (RFC 5280 §4.1.2.5.1 and §4.1.2.5.2): `YYMMDDHHMMSSZ` as
/// UTCTime, years 1950 to 2049, or `YYYYMMDDHHMMSSZ` as GeneralizedTime. An
/// instant before 1970 is read as 1970 (it is in the past either way).
fn time(input: &[u8]) -> Option<(UnixTime, &[u8])> {
    let (tag, text, rest) = element(input)?;
    let (year, text) = match tag {
        UTC_TIME => {
            let yy = number(text.get(..2)?)?;
            (if yy < 50 { 2000 + yy } else { 1900 + yy }, &text[2..])
        }
        GENERALIZED_TIME => (number(text.get(..4)?)?, &text[4..]),
        _ => return None,
    };
    // MMDDHHMMSS, then Z.
    let [date @ .., b'Z'] = text else {
        return None;
    };
    if date.len() != 10 {
        return None;
    }
    let field = |i: usize| number(&date[2 * i..2 * i + 2]);
    let (month, day) = (field(0)?, field(1)?);
    let (hour, minute, second) = (field(2)?, field(3)?, field(4)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let days = days_since_epoch(i64::try_from(year).ok()?, month, day);
    let secs = days * 86_400 + i64::try_from(hour * 3600 + minute * 60 + second).ok()?;
    let secs = u64::try_from(secs).unwrap_or(0);
    Some((UnixTime::since_unix_epoch(Duration::from_secs(secs)), rest))
}

/// ASCII digits as a number; `None` for anything else.
fn number(digits: &[u8]) -> Option<u64> {
    digits.iter().try_fold(0u64, |n, d| {
        d.is_ascii_digit().then(|| n * 10 + u64::from(d - b'0'))
    })
}

/// Days from 1970-01-01 to a date of the proleptic Gregorian calendar
/// (negative before it). Years are counted from March, so that the leap day
/// ends a year: a 400-year cycle is then 146,097 days, and a day's place in
/// its year follows from its month by a linear formula.
fn days_since_epoch(year: i64, month: u64, day: u64) -> i64 {
    let (month, day) = (month as i64, day as i64);
    let year = if month <= 2 { year - 1 } else { year };
    let cycle = year.div_euclid(400);
    let year_of_cycle = year - cycle * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_cycle = year_of_cycle * 365 + year_of_cycle / 4 - year_of_cycle / 100 + day_of_year;
    // 719,468 days from 0000-03-01 to 1970-01-01.
    cycle * 146_097 + day_of_cycle - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(t: UnixTime) -> u64 {
        t.as_secs()
    }

    #[test]
    fn days_count_from_1970() {
        assert_eq!(days_since_epoch(1970, 1, 1), 0);
        assert_eq!(days_since_epoch(1969, 12, 31), -1);
        assert_eq!(days_since_epoch(2000, 3, 1), 11_017);
        assert_eq!(days_since_epoch(2024, 2, 29), 19_782);
        assert_eq!(days_since_epoch(2100, 3, 1), 47_541);
    }

    fn cert_valid(from: (i32, u8, u8), to: (i32, u8, u8)) -> CertificateDer<'static> {
        let mut params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
        params.not_before = rcgen::date_time_ymd(from.0, from.1, from.2);
        params.not_after = rcgen::date_time_ymd(to.0, to.1, to.2);
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().clone()
    }

    /// Both encodings of `Time`: rcgen writes UTCTime up to 2049 and
    /// GeneralizedTime from 2050, as RFC 5280 asks.
    #[test]
    fn reads_the_validity_period() {
        let der = cert_valid((1999, 12, 31), (2049, 12, 31));
        let (from, to) = validity(&der).unwrap();
        assert_eq!(secs(from), 946_598_400);
        assert_eq!(secs(to), 2_524_521_600);
        let der = cert_valid((2020, 2, 29), (2050, 1, 1));
        let (from, to) = validity(&der).unwrap();
        assert_eq!(secs(from), 1_582_934_400);
        assert_eq!(secs(to), 2_524_608_000);
    }

    /// The checks of an anchor presented as the server's own, each in turn:
    /// the exact bytes, the validity period at both ends, the name.
    #[test]
    fn an_anchor_is_checked_for_time_and_name() {
        let cert = cert_valid((2020, 1, 1), (2030, 1, 1));
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert.clone()).unwrap();
        let provider = crate::crypto::provider();
        let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .unwrap();
        let verifier = AnchorVerifier::new(inner, vec![cert.clone()]);
        let ip = ServerName::try_from("127.0.0.1").unwrap();
        let at = |y: i64| {
            let secs = u64::try_from(days_since_epoch(y, 6, 1) * 86_400).unwrap();
            UnixTime::since_unix_epoch(Duration::from_secs(secs))
        };
        assert!(verifier.verify_anchor(&cert, &ip, at(2025)).is_ok());
        let err = |r: Result<(), rustls::Error>| r.unwrap_err().to_string();
        assert!(err(verifier.verify_anchor(&cert, &ip, at(2031))).contains("expired"));
        assert!(err(verifier.verify_anchor(&cert, &ip, at(2019))).contains("not valid yet"));
        let other = ServerName::try_from("other.test").unwrap();
        assert!(
            err(verifier.verify_anchor(&cert, &other, at(2025))).contains("not valid for name")
        );
        let stranger = cert_valid((2020, 1, 1), (2030, 1, 1));
        assert!(err(verifier.verify_anchor(&stranger, &ip, at(2025))).contains("not one of"));
    }

    #[test]
    fn refuses_what_is_not_a_certificate() {
        let der = cert_valid((2020, 1, 1), (2030, 1, 1));
        for cut in [0, 1, 2, 10, 40, der.len() / 2] {
            assert!(validity(&der[..cut]).is_none(), "cut at {cut}");
        }
        assert!(validity(b"\x30\x84\xff\xff\xff\xff").is_none());
        assert!(validity(b"\x04\x00").is_none());
        assert_eq!(
            time(b"\x17\x0d991231235960Z").map(|(t, _)| secs(t)),
            None,
            "a second of 60"
        );
        assert_eq!(time(b"\x17\x0d9912312359Z0Z"), None);
        assert_eq!(time(b"\x18\x0d991231235959Z"), None);
        assert_eq!(
            time(b"\x17\x0d500101000000Z").map(|(t, _)| secs(t)),
            Some(0),
            "1950 is read as 1970"
        );
    }
}
