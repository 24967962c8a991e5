//! Errors of [`super::Filter::build`]: configuration problems, each naming the offending item. Bad list
//! *lines* are never errors (they are counted in [`super::ListStats`]).

/// Why a filter could not be built.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    /// Two `[[lists]]` share a name.
    #[error("duplicate list name {0:?}")]
    DuplicateList(String),
    /// A list has an empty name.
    #[error("a list has an empty name (source {0:?})")]
    EmptyListName(String),
    /// Two `[[groups]]` share a name.
    #[error("duplicate group name {0:?}")]
    DuplicateGroup(String),
    /// A group has an empty name.
    #[error("a group has an empty name")]
    EmptyGroupName,
    /// A list names a group that is not configured.
    #[error("list {list:?} refers to unknown group {group:?}")]
    UnknownGroup {
        /// The list.
        list: String,
        /// The group it names.
        group: String,
    },
    /// A client selector is not an IP or CIDR.
    #[error("group {group:?}: bad client {value:?} (expected an IP address or CIDR)")]
    BadClient {
        /// The group.
        group: String,
        /// The selector.
        value: String,
    },
    /// The same client selector appears in two groups.
    #[error("client {client:?} is in two groups: {first:?} and {second:?}")]
    ClientInTwoGroups {
        /// The selector.
        client: String,
        /// First group claiming it.
        first: String,
        /// Second group claiming it.
        second: String,
    },
    /// `block_mode`/`block_ips` mismatch.
    #[error("group {group:?}: {why}")]
    BadBlockIps {
        /// The group.
        group: String,
        /// What is wrong.
        why: String,
    },
    /// A group's allow/deny entry cannot be parsed.
    #[error("group {group:?}: bad {field} entry {entry:?}: {reason}")]
    BadEntry {
        /// The group.
        group: String,
        /// `allow` or `deny`.
        field: &'static str,
        /// The entry.
        entry: String,
        /// Parser message.
        reason: String,
    },
    /// More groups than a [`super::GroupId`] can number.
    #[error("too many groups ({0}); at most 65535")]
    TooManyGroups(usize),
    /// The wildcard automaton or regex set exceeded its size limits.
    #[error("cannot compile {what}: {why}")]
    Compile {
        /// `wildcard rules` or `regex rules`.
        what: &'static str,
        /// Library message.
        why: String,
    },
}
