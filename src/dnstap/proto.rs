//! The dnstap protobuf messages (`dnstap.proto` of dnstap/dnstap.pb), written
//! out with prost's derive from the published field numbers: no protoc at build
//! time. Only what dnsguard sends is spelled out; decoders skip nothing they know.

/// The top-level dnstap envelope.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Dnstap {
    /// The server's identity (`[dnstap] identity`).
    #[prost(bytes = "vec", optional, tag = "1")]
    pub identity: Option<Vec<u8>>,
    /// The server's version string (`[dnstap] version`).
    #[prost(bytes = "vec", optional, tag = "2")]
    pub version: Option<Vec<u8>>,
    /// Free-form annotation: dnsguard puts the tunnel detector's findings here.
    #[prost(bytes = "vec", optional, tag = "3")]
    pub extra: Option<Vec<u8>>,
    /// The payload.
    #[prost(message, optional, tag = "14")]
    pub message: Option<Message>,
    /// Which payload is filled in: always [`DnstapType::Message`].
    #[prost(enumeration = "DnstapType", required, tag = "15")]
    pub r#type: i32,
}

/// `Dnstap.Type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum DnstapType {
    /// A [`Message`] payload.
    Message = 1,
}

/// `SocketFamily`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum SocketFamily {
    /// IPv4.
    Inet = 1,
    /// IPv6.
    Inet6 = 2,
}

/// `SocketProtocol`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum SocketProtocol {
    /// DNS over UDP.
    Udp = 1,
    /// DNS over TCP.
    Tcp = 2,
    /// DNS over TLS.
    Dot = 3,
    /// DNS over HTTPS.
    Doh = 4,
    /// DNS over QUIC.
    Doq = 7,
}

/// `Message.Type` (the ones dnsguard sends).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum MessageType {
    /// A query as a client sent it to dnsguard.
    ClientQuery = 5,
    /// dnsguard's answer to a client.
    ClientResponse = 6,
    /// A query dnsguard sent to its upstream.
    ForwarderQuery = 7,
    /// The upstream's answer.
    ForwarderResponse = 8,
}

/// `Policy.Match`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum PolicyMatch {
    /// The query name (or a name of the answer's CNAME chain).
    Qname = 1,
    /// The client's address.
    ClientIp = 2,
    /// An address in the answer.
    ResponseIp = 3,
}

/// `Policy.Action`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum PolicyAction {
    /// Answered NXDOMAIN.
    Nxdomain = 1,
    /// Answered with an empty answer section.
    Nodata = 2,
    /// The answer was not altered.
    Pass = 3,
    /// Not answered normally (dnsguard: REFUSED, which dnstap has no action for).
    Drop = 4,
    /// Answered with data of the policy's own (the block address).
    LocalData = 6,
}

/// `Policy`: why dnsguard changed (or explicitly kept) an answer.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Policy {
    /// What kind of policy: `blocklist`, `allowlist`, `tunnel`, `rebinding`, `access`.
    #[prost(string, optional, tag = "1")]
    pub r#type: Option<String>,
    /// The rule: list name and line.
    #[prost(bytes = "vec", optional, tag = "2")]
    pub rule: Option<Vec<u8>>,
    /// What was done.
    #[prost(enumeration = "PolicyAction", optional, tag = "3")]
    pub action: Option<i32>,
    /// What matched.
    #[prost(enumeration = "PolicyMatch", optional, tag = "4")]
    pub r#match: Option<i32>,
    /// The matched value (a name as text, an address as 4 or 16 octets).
    #[prost(bytes = "vec", optional, tag = "5")]
    pub value: Option<Vec<u8>>,
}

/// `Message`: one DNS message and where and when it went.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Message {
    /// Which arrow of the exchange.
    #[prost(enumeration = "MessageType", required, tag = "1")]
    pub r#type: i32,
    /// IPv4 or IPv6.
    #[prost(enumeration = "SocketFamily", optional, tag = "2")]
    pub socket_family: Option<i32>,
    /// The transport.
    #[prost(enumeration = "SocketProtocol", optional, tag = "3")]
    pub socket_protocol: Option<i32>,
    /// The initiator's (client's) address, 4 or 16 octets.
    #[prost(bytes = "vec", optional, tag = "4")]
    pub query_address: Option<Vec<u8>>,
    /// The responder's address.
    #[prost(bytes = "vec", optional, tag = "5")]
    pub response_address: Option<Vec<u8>>,
    /// The initiator's port.
    #[prost(uint32, optional, tag = "6")]
    pub query_port: Option<u32>,
    /// The responder's port.
    #[prost(uint32, optional, tag = "7")]
    pub response_port: Option<u32>,
    /// When the query arrived: seconds since the epoch.
    #[prost(uint64, optional, tag = "8")]
    pub query_time_sec: Option<u64>,
    /// ... and the nanoseconds.
    #[prost(fixed32, optional, tag = "9")]
    pub query_time_nsec: Option<u32>,
    /// The query, wire format, verbatim.
    #[prost(bytes = "vec", optional, tag = "10")]
    pub query_message: Option<Vec<u8>>,
    /// When the answer left: seconds since the epoch.
    #[prost(uint64, optional, tag = "12")]
    pub response_time_sec: Option<u64>,
    /// ... and the nanoseconds.
    #[prost(fixed32, optional, tag = "13")]
    pub response_time_nsec: Option<u32>,
    /// The answer, wire format, verbatim.
    #[prost(bytes = "vec", optional, tag = "14")]
    pub response_message: Option<Vec<u8>>,
    /// The policy applied, if any.
    #[prost(message, optional, tag = "15")]
    pub policy: Option<Policy>,
}
