//! Certificate identities: the SHA-256 fingerprint and the SPKI pin (RFC 7858
//! §4.2) that dnsguard logs for its own certificate, the verifier that
//! trusts an upstream's certificate by its pin alone, as `kdig +tls-pin` does
//! (a self-signed dnsguard is reachable over DoT/DoH with no CA to distribute),
//! and its server-side mirror: a client certificate known by its pin alone
//! ([`AnyClientCert`]), which `[[clients]] cert_pins` turns into a proven identity.

use std::sync::Arc;

use base64::Engine;
use rustls::DigitallySignedStruct;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};

/// Identifies a certificate for clients that pin it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// SHA-256 of the certificate's DER, colon-separated hex (as `openssl x509
    /// -fingerprint -sha256` prints it).
    pub fingerprint: String,
    /// base64 SHA-256 of the SubjectPublicKeyInfo (RFC 7858 SPKI pin).
    pub spki_pin: String,
}

/// Fingerprint and SPKI pin of a DER certificate; `None` if it does not parse.
pub fn identity(cert: &[u8]) -> Option<Identity> {
    let spki_pin = spki_pin(cert)?;
    let fingerprint = ring::digest::digest(&ring::digest::SHA256, cert)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":");
    Some(Identity {
        fingerprint,
        spki_pin,
    })
}

/// The SubjectPublicKeyInfo (tag and length included) of a DER X.509
/// certificate.
fn spki(cert: &[u8]) -> Option<&[u8]> {
    tbs_field(cert, 6).and_then(|(tag, whole)| (tag == 0x30).then_some(whole))
}

/// Whether `cert` (DER) names itself as its issuer: a self-signed certificate,
/// which a device trusts only when it is installed as a root.
pub fn is_self_issued(cert: &[u8]) -> bool {
    match (tbs_field(cert, 3), tbs_field(cert, 5)) {
        (Some(issuer), Some(subject)) => issuer == subject,
        _ => false,
    }
}

/// Field `index` of a DER certificate's tbsCertificate, counted as if the
/// optional `[0] version` were present (3: issuer, 5: subject, 6: the public
/// key): its tag and the whole element.
fn tbs_field(cert: &[u8], index: usize) -> Option<(u8, &[u8])> {
    let (_, cert_body, _) = der_element(cert)?;
    let (_, mut tbs, _) = der_element(cert_body)?;
    let mut at = 0;
    while !tbs.is_empty() {
        let (tag, _, whole) = der_element(tbs)?;
        if at == 0 && tag != 0xA0 {
            at = 1; // no explicit version
        }
        if at == index {
            return Some((tag, whole));
        }
        tbs = &tbs[whole.len()..];
        at += 1;
    }
    None
}

/// The first DER element of `bytes`: its tag, its contents, and the whole
/// element (tag and length included).
fn der_element(bytes: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let tag = *bytes.first()?;
    let first = *bytes.get(1)?;
    let (len, header) = if first < 0x80 {
        (first as usize, 2)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 {
            return None;
        }
        let len = bytes
            .get(2..2 + n)?
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | *b as usize);
        (len, 2 + n)
    };
    let end = header.checked_add(len)?;
    Some((tag, bytes.get(header..end)?, bytes.get(..end)?))
}

/// The base64 SHA-256 of `cert`'s SubjectPublicKeyInfo; `None` if it does not parse.
pub fn spki_pin(cert: &[u8]) -> Option<String> {
    Some(base64::engine::general_purpose::STANDARD.encode(spki_digest(cert)?))
}

/// The SHA-256 of `cert`'s SubjectPublicKeyInfo (the SPKI pin's bytes); `None`
/// if it does not parse.
pub fn spki_digest(cert: &[u8]) -> Option<[u8; 32]> {
    let digest = ring::digest::digest(&ring::digest::SHA256, spki(cert)?);
    digest.as_ref().try_into().ok()
}

/// The bytes of an SPKI pin (base64 of a SHA-256); `None` when `pin` is not one.
pub fn parse_pin(pin: &str) -> Option<[u8; 32]> {
    base64::engine::general_purpose::STANDARD
        .decode(pin.trim())
        .ok()?
        .try_into()
        .ok()
}

/// True when `pin` has the form of an SPKI pin: base64 of 32 bytes.
pub fn is_pin(pin: &str) -> bool {
    parse_pin(pin).is_some()
}

/// The SPKI digest of the certificate a TLS client presented, if it presented one.
pub fn client_pin(peer_certificates: Option<&[CertificateDer<'_>]>) -> Option<[u8; 32]> {
    spki_digest(peer_certificates?.first()?)
}

/// The handshake signature checks both verifiers make with the crypto provider's
/// algorithms: whatever a certificate says, its key proves itself here.
#[derive(Debug)]
struct Signatures(Arc<CryptoProvider>);

impl Signatures {
    fn tls12(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn tls13(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Asks every TLS client for a certificate and takes any well-formed one, whoever
/// issued it: a client certificate is an identity only through its SPKI pin
/// (`[[clients]] cert_pins`), and the handshake's CertificateVerify signature
/// proves the client holds that key. Never required: a client without one, or
/// with one nobody listed, is served as before and gains nothing.
#[derive(Debug)]
pub struct AnyClientCert {
    signatures: Signatures,
}

impl AnyClientCert {
    /// A verifier checking handshake signatures with `provider`'s algorithms.
    pub fn new(provider: Arc<CryptoProvider>) -> Self {
        Self {
            signatures: Signatures(provider),
        }
    }
}

impl ClientCertVerifier for AnyClientCert {
    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        // No CA to name: a client sends whichever certificate it was given.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        // Dates and issuer do not matter to a pin; the key must be readable.
        match spki_digest(end_entity) {
            Some(_) => Ok(ClientCertVerified::assertion()),
            None => Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::BadEncoding,
            )),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.signatures.tls12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.signatures.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.signatures.schemes()
    }
}

/// A client key pair for `name` (ECDSA P-256, a self-signed certificate with
/// common name `name` and rcgen's far-off expiry: a pin does not expire): `(key PEM, certificate PEM, SPKI pin)`. Made on the
/// machine that will use it, so the private key never travels.
pub fn client_keypair(name: &str) -> Result<(String, String, String), rcgen::Error> {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let key = rcgen::KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    let pin = spki_pin(cert.der()).unwrap_or_default();
    Ok((key.serialize_pem(), cert.pem(), pin))
}

/// Accepts a server certificate whose SPKI pin is one of `pins`, whatever its
/// issuer, name or dates: the pin names the key, and the handshake's signature
/// still proves the server holds it.
#[derive(Debug)]
pub struct PinVerifier {
    pins: Vec<String>,
    signatures: Signatures,
}

impl PinVerifier {
    /// A verifier for `pins` (base64 SHA-256 of the SubjectPublicKeyInfo).
    pub fn new(pins: Vec<String>, provider: Arc<CryptoProvider>) -> Self {
        Self {
            pins,
            signatures: Signatures(provider),
        }
    }
}

impl ServerCertVerifier for PinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match spki_pin(end_entity) {
            Some(pin) if self.pins.contains(&pin) => Ok(ServerCertVerified::assertion()),
            Some(pin) => Err(rustls::Error::General(format!(
                "certificate's SPKI pin {pin} is not one of resolver.tls_pins"
            ))),
            None => Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::BadEncoding,
            )),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.signatures.tls12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.signatures.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.signatures.schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::PublicKeyData;

    #[test]
    fn a_self_signed_certificate_is_self_issued_and_a_ca_signed_one_is_not() {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, "dnsguard test CA");
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_cert = ca.clone().self_signed(&ca_key).unwrap();
        assert!(is_self_issued(ca_cert.der()));
        let issuer = rcgen::Issuer::new(ca, ca_key);
        let key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec!["dns.example.net".to_string()])
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        assert!(!is_self_issued(leaf.der()));
        assert!(!is_self_issued(b"not a certificate"));
    }

    #[test]
    fn spki_pin_is_the_hash_of_the_keys_public_key_info() {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let id = identity(cert.der()).expect("parses");
        let want = base64::engine::general_purpose::STANDARD.encode(ring::digest::digest(
            &ring::digest::SHA256,
            &key.subject_public_key_info(),
        ));
        assert_eq!(id.spki_pin, want);
        assert_eq!(id.fingerprint.len(), 32 * 3 - 1);
    }

    #[test]
    fn garbage_is_not_a_certificate() {
        assert!(identity(b"").is_none());
        assert!(identity(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]).is_none());
        assert!(identity(&[0x30, 0x03, 0x30, 0x01, 0x02]).is_none());
    }
}
