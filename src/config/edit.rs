//! Changes to the configuration file from the dashboard, the CLI and the egress
//! guard's allowlist learning, made on the TOML document itself (`toml_edit`) so
//! the operator's comments and layout survive, and written atomically (temp file
//! in the same directory, fsync, rename). The one read → edit → validate → write
//! → rename sequence: [`commit`] for a file no server applies live (the CLI);
//! the dashboard runs its two halves, [`edit`] then [`Staged`], to apply the
//! staged configuration live before the rename.

use std::path::{Path, PathBuf};

use toml_edit::{Array, ArrayOfTables, DocumentMut, Item, Table, Value, value};

use crate::filter::{GroupConfig, ListConfig};

/// A change that cannot be made to the document.
#[derive(Debug, thiserror::Error)]
pub enum EditError {
    /// The file is not TOML (it was edited by hand since the server started).
    #[error("the config file is not valid TOML: {0}")]
    Syntax(String),
    /// A key holds something other than what it should (e.g. `groups` is not `[[groups]]`).
    #[error("{0} has an unexpected shape in the config file")]
    Shape(&'static str),
    /// The named list or group does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The list or group exists already.
    #[error("{0}")]
    Exists(String),
}

/// Why a change to the config file was not made.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    /// The file could not be read or written.
    #[error("{0}")]
    Io(String),
    /// The document could not be changed.
    #[error(transparent)]
    Edit(#[from] EditError),
    /// The changed file is not a valid configuration (the message names key and line).
    #[error(transparent)]
    Invalid(#[from] super::ConfigError),
}

/// Reads the config file at `path`, applies `change` to its document, and
/// validates the result; the new text and what `change` returned. Nothing is
/// written.
pub fn edit<T, E: From<CommitError>>(
    path: &Path,
    change: impl FnOnce(&mut DocumentMut) -> Result<T, E>,
) -> Result<(String, T), E> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CommitError::Io(format!("cannot read {}: {e}", path.display())))?;
    let mut doc = parse(&text).map_err(CommitError::from)?;
    let out = change(&mut doc)?;
    let new_text = doc.to_string();
    super::Config::parse(&new_text, &path.display().to_string()).map_err(CommitError::from)?;
    Ok((new_text, out))
}

/// Changes the config file at `path` in one go: [`edit`], [`Staged::write`],
/// [`Staged::commit`]; what `change` returned. On any error the file is
/// untouched. Blocking.
pub fn commit<T, E: From<CommitError>>(
    path: &Path,
    change: impl FnOnce(&mut DocumentMut) -> Result<T, E>,
) -> Result<T, E> {
    let (new_text, out) = edit(path, change)?;
    Staged::write(path, &new_text)?.commit()?;
    Ok(out)
}

/// A new text of the config file, written beside it (same directory, so relative
/// paths resolve the same) with the file's mode, and loaded as SIGHUP would load
/// it. [`Staged::commit`] renames it into place; dropped uncommitted, it is removed.
pub struct Staged {
    tmp: PathBuf,
    path: PathBuf,
    committed: bool,
    /// The configuration the new text loads as.
    pub config: super::Config,
}

impl Staged {
    /// Writes `new_text` for `path` and loads it (blocking: call off the async
    /// threads).
    pub fn write(path: &Path, new_text: &str) -> Result<Staged, CommitError> {
        let mode = {
            use std::os::unix::fs::PermissionsExt;
            std::fs::metadata(path).map_or(0o644, |m| m.permissions().mode() & 0o777)
        };
        let tmp = crate::datadir::temp_path(path);
        crate::datadir::write_atomically(&tmp, new_text.as_bytes(), mode)
            .map_err(|e| CommitError::Io(format!("cannot write {}: {e}", tmp.display())))?;
        let mut staged = Staged {
            tmp,
            path: path.to_owned(),
            committed: false,
            config: super::Config::default(),
        };
        // A text that does not load is removed when `staged` drops.
        staged.config = super::Config::load(&staged.tmp)?;
        Ok(staged)
    }

    /// Renames the new text into place.
    pub fn commit(mut self) -> Result<(), CommitError> {
        std::fs::rename(&self.tmp, &self.path)
            .map_err(|e| CommitError::Io(format!("cannot replace {}: {e}", self.path.display())))?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Parses the file's text.
pub fn parse(text: &str) -> Result<DocumentMut, EditError> {
    text.parse::<DocumentMut>()
        .map_err(|e| EditError::Syntax(e.to_string()))
}

fn strings<'a>(items: impl IntoIterator<Item = &'a String>) -> Value {
    let mut a = Array::new();
    for s in items {
        a.push(s.as_str());
    }
    Value::Array(a)
}

fn aot<'a>(
    doc: &'a mut DocumentMut,
    key: &'static str,
) -> Result<&'a mut ArrayOfTables, EditError> {
    if !doc.contains_key(key) {
        doc.insert(key, Item::ArrayOfTables(ArrayOfTables::new()));
    }
    doc.get_mut(key)
        .and_then(Item::as_array_of_tables_mut)
        .ok_or(EditError::Shape(key))
}

fn position(tables: &ArrayOfTables, name: &str) -> Option<usize> {
    tables
        .iter()
        .position(|t| t.get("name").and_then(Item::as_str) == Some(name))
}

/// Appends a `[[lists]]` table.
pub fn add_list(doc: &mut DocumentMut, list: &ListConfig) -> Result<(), EditError> {
    let lists = aot(doc, "lists")?;
    if position(lists, &list.name).is_some() {
        return Err(EditError::Exists(format!(
            "a list named {:?} exists",
            list.name
        )));
    }
    let mut t = Table::new();
    t.insert("name", value(list.name.as_str()));
    t.insert("source", value(list.source.as_str()));
    if !list.enabled {
        t.insert("enabled", value(false));
    }
    if list.kind == crate::filter::ListKind::Allow {
        t.insert("kind", value("allow"));
    }
    if list.groups != ["*"] {
        t.insert("groups", Item::Value(strings(&list.groups)));
    }
    lists.push(t);
    Ok(())
}

/// Removes the `[[lists]]` table named `name`.
pub fn remove_list(doc: &mut DocumentMut, name: &str) -> Result<(), EditError> {
    let lists = aot(doc, "lists")?;
    let i = position(lists, name)
        .ok_or_else(|| EditError::NotFound(format!("no list named {name:?}")))?;
    lists.remove(i);
    Ok(())
}

fn group_table<'a>(doc: &'a mut DocumentMut, name: &str) -> Result<&'a mut Table, EditError> {
    let groups = aot(doc, "groups")?;
    let i = match position(groups, name) {
        Some(i) => i,
        None => {
            let mut t = Table::new();
            t.insert("name", value(name));
            groups.push(t);
            groups.len() - 1
        }
    };
    groups.get_mut(i).ok_or(EditError::Shape("groups"))
}

fn enum_str<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// Creates or replaces the settings of `[[groups]]` `g.name` (other keys of an
/// existing table and its comments stay).
pub fn put_group(doc: &mut DocumentMut, g: &GroupConfig) -> Result<(), EditError> {
    let t = group_table(doc, &g.name)?;
    let d = GroupConfig::default();
    set_or_remove(t, "clients", !g.clients.is_empty(), || strings(&g.clients));
    set_or_remove(t, "allow", !g.allow.is_empty(), || strings(&g.allow));
    set_or_remove(t, "deny", !g.deny.is_empty(), || strings(&g.deny));
    set_or_remove(t, "default_deny", g.default_deny, || true.into());
    set_or_remove(t, "block_mode", g.block_mode != d.block_mode, || {
        enum_str(&g.block_mode).into()
    });
    set_or_remove(t, "block_ips", !g.block_ips.is_empty(), || {
        let ips: Vec<String> = g.block_ips.iter().map(ToString::to_string).collect();
        strings(&ips)
    });
    set_or_remove(t, "block_ttl", g.block_ttl != d.block_ttl, || {
        i64::from(g.block_ttl).into()
    });
    set_or_remove(t, "tunnel_action", g.tunnel_action.is_some(), || {
        enum_str(&g.tunnel_action).into()
    });
    for (key, action) in [
        ("tunnel_action_low", g.tunnel_action_low),
        ("tunnel_action_medium", g.tunnel_action_medium),
        ("tunnel_action_high", g.tunnel_action_high),
    ] {
        set_or_remove(t, key, action.is_some(), || enum_str(&action).into());
    }
    set_or_remove(t, "mode", g.mode.is_some(), || enum_str(&g.mode).into());
    set_or_remove(
        t,
        "alert_new_domains",
        g.alert_new_domains.is_some(),
        || g.alert_new_domains.unwrap_or_default().into(),
    );
    Ok(())
}

fn set_or_remove(t: &mut Table, key: &str, set: bool, v: impl FnOnce() -> Value) {
    if set {
        match t.get_mut(key).and_then(Item::as_value_mut) {
            // Keep the comment/whitespace decoration of an existing value.
            Some(old) => {
                let decor = old.decor().clone();
                *old = v();
                *old.decor_mut() = decor;
            }
            None => {
                t.insert(key, Item::Value(v()));
            }
        }
    } else {
        t.remove(key);
    }
}

/// Sets the `mode` (`learn`/`enforce`) of group `name`, keeping its other keys
/// and comments.
pub fn set_group_mode(
    doc: &mut DocumentMut,
    name: &str,
    mode: crate::filter::GroupMode,
) -> Result<(), EditError> {
    let t = group_table(doc, name)?;
    set_or_remove(t, "mode", true, || enum_str(&mode).into());
    Ok(())
}

/// Removes the `[[groups]]` table named `name`.
pub fn remove_group(doc: &mut DocumentMut, name: &str) -> Result<(), EditError> {
    let groups = aot(doc, "groups")?;
    let i = position(groups, name)
        .ok_or_else(|| EditError::NotFound(format!("no group named {name:?}")))?;
    groups.remove(i);
    Ok(())
}

/// Which entry list of a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleKind {
    /// `allow`.
    Allow,
    /// `deny`.
    Deny,
}

impl RuleKind {
    fn key(self) -> &'static str {
        match self {
            RuleKind::Allow => "allow",
            RuleKind::Deny => "deny",
        }
    }
    fn other(self) -> RuleKind {
        match self {
            RuleKind::Allow => RuleKind::Deny,
            RuleKind::Deny => RuleKind::Allow,
        }
    }
}

fn entries<'a>(t: &'a mut Table, key: &'static str) -> Result<&'a mut Array, EditError> {
    if !t.contains_key(key) {
        t.insert(key, Item::Value(Value::Array(Array::new())));
    }
    t.get_mut(key)
        .and_then(Item::as_array_mut)
        .ok_or(EditError::Shape("groups.allow/deny"))
}

/// Adds `entry` to the group's `allow` or `deny` (creating the group table if
/// needed) and takes it out of the other one, so the newest decision wins.
pub fn add_rule(
    doc: &mut DocumentMut,
    group: &str,
    kind: RuleKind,
    entry: &str,
) -> Result<(), EditError> {
    let t = group_table(doc, group)?;
    if t.contains_key(kind.other().key()) {
        entries(t, kind.other().key())?.retain(|v| v.as_str() != Some(entry));
    }
    let a = entries(t, kind.key())?;
    if !a.iter().any(|v| v.as_str() == Some(entry)) {
        a.push(entry);
    }
    Ok(())
}

/// Removes `entry` from the group's `allow` or `deny`.
pub fn remove_rule(
    doc: &mut DocumentMut,
    group: &str,
    kind: RuleKind,
    entry: &str,
) -> Result<(), EditError> {
    let groups = aot(doc, "groups")?;
    let i = position(groups, group)
        .ok_or_else(|| EditError::NotFound(format!("no group named {group:?}")))?;
    let t = groups.get_mut(i).ok_or(EditError::Shape("groups"))?;
    let a = entries(t, kind.key())?;
    let before = a.len();
    a.retain(|v| v.as_str() != Some(entry));
    if a.len() == before {
        return Err(EditError::NotFound(format!(
            "{entry:?} is not in group {group:?} {}",
            kind.key()
        )));
    }
    Ok(())
}

/// Sets `section.key` (creating the section table if needed).
pub fn set(
    doc: &mut DocumentMut,
    section: &'static str,
    key: &str,
    v: Value,
) -> Result<(), EditError> {
    if !doc.contains_key(section) {
        doc.insert(section, Item::Table(Table::new()));
    }
    let t = doc
        .get_mut(section)
        .and_then(Item::as_table_like_mut)
        .ok_or(EditError::Shape(section))?;
    match t.get_mut(key).and_then(Item::as_value_mut) {
        Some(old) => {
            let decor = old.decor().clone();
            *old = v;
            *old.decor_mut() = decor;
        }
        None => {
            t.insert(key, Item::Value(v));
        }
    }
    Ok(())
}

/// Adds every proposal of `learned` as an allow entry of its group (which must
/// be among `groups`, the configuration in force) and, with `enforce`, switches
/// the group to `mode = "enforce"`; how many entries were new.
pub fn apply_learned(
    doc: &mut DocumentMut,
    learned: &crate::guard::learn::Learned,
    groups: &[GroupConfig],
    enforce: bool,
) -> Result<usize, String> {
    let Some(group) = groups.iter().find(|g| g.name == learned.group) else {
        return Err(format!(
            "no [[groups]] entry named {:?} in the configuration",
            learned.group
        ));
    };
    let mut added = 0;
    for p in &learned.proposals {
        if group.allow.contains(&p.entry) {
            continue;
        }
        add_rule(doc, &learned.group, RuleKind::Allow, &p.entry).map_err(|e| e.to_string())?;
        added += 1;
    }
    if enforce {
        set_group_mode(doc, &learned.group, crate::filter::GroupMode::Enforce)
            .map_err(|e| e.to_string())?;
    }
    Ok(added)
}

/// An array of strings as a TOML value.
pub fn string_array(items: &[String]) -> Value {
    strings(items)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_commit_sequence_keeps_mode_and_leaves_nothing_on_failure() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "# mine\n[cache]\nmin_ttl = 1\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let files = || std::fs::read_dir(dir.path()).unwrap().count();
        // An invalid change is refused before anything is written.
        let bad = edit(&path, |doc| -> Result<(), CommitError> {
            doc["cache"]["min_ttl"] = value(99999);
            doc["cache"]["max_ttl"] = value(1);
            Ok(())
        });
        assert!(matches!(bad, Err(CommitError::Invalid(_))));
        assert_eq!(files(), 1);
        // Staged and dropped: the temp file goes, the file is unchanged.
        let (text, ()) = edit(&path, |doc| -> Result<(), CommitError> {
            doc["cache"]["min_ttl"] = value(5);
            Ok(())
        })
        .unwrap();
        let staged = Staged::write(&path, &text).unwrap();
        assert_eq!(staged.config.cache.min_ttl, 5);
        assert_eq!(files(), 2);
        drop(staged);
        assert_eq!(files(), 1);
        assert!(
            std::fs::read_to_string(&path)
                .unwrap()
                .contains("min_ttl = 1")
        );
        // Committed: comments kept, mode kept, no temp file left.
        Staged::write(&path, &text).unwrap().commit().unwrap();
        let now = std::fs::read_to_string(&path).unwrap();
        assert!(
            now.starts_with("# mine") && now.contains("min_ttl = 5"),
            "{now}"
        );
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
        assert_eq!(files(), 1);
    }

    #[test]
    fn commit_writes_a_valid_change_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "# mine\n[[groups]]\nname = \"lab\"\n").unwrap();
        let bad = commit(&path, |doc| -> Result<(), CommitError> {
            add_rule(doc, "lab", RuleKind::Allow, "||b^$bogus")?;
            Ok(())
        });
        assert!(matches!(bad, Err(CommitError::Invalid(_))), "{bad:?}");
        let n = commit(&path, |doc| -> Result<usize, CommitError> {
            add_rule(doc, "lab", RuleKind::Allow, "||a.example^")?;
            Ok(1)
        })
        .unwrap();
        assert_eq!(n, 1);
        let now = std::fs::read_to_string(&path).unwrap();
        assert!(
            now.starts_with("# mine") && now.contains("||a.example^"),
            "{now}"
        );
        assert!(!now.contains("bogus"), "{now}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn edits_keep_comments() {
        let text = "# my resolver\n[server]\nlisten = [\"127.0.0.1:53\"] # here\n\n[[groups]]\n# agents\nname = \"agents\"\nclients = [\"10.0.0.0/8\"]\ndeny = [\"x.com\"]\n";
        let mut doc = parse(text).unwrap();
        add_rule(&mut doc, "agents", RuleKind::Allow, "x.com").unwrap();
        add_rule(&mut doc, "default", RuleKind::Deny, "ads.com").unwrap();
        set(&mut doc, "query_log", "retention_days", 7.into()).unwrap();
        add_list(
            &mut doc,
            &ListConfig {
                name: "extra".into(),
                source: "builtin:default".into(),
                ..ListConfig::default()
            },
        )
        .unwrap();
        let out = doc.to_string();
        assert!(
            out.contains("# my resolver") && out.contains("# here") && out.contains("# agents")
        );
        let cfg: crate::config::Config = toml::from_str(&out).unwrap();
        let agents = cfg.groups.iter().find(|g| g.name == "agents").unwrap();
        assert_eq!(agents.allow, ["x.com"]);
        assert!(agents.deny.is_empty());
        assert_eq!(
            cfg.groups
                .iter()
                .find(|g| g.name == "default")
                .unwrap()
                .deny,
            ["ads.com"]
        );
        assert_eq!(cfg.query_log.retention_days, 7);
        assert_eq!(cfg.lists.last().unwrap().name, "extra");
        remove_list(&mut doc, "extra").unwrap();
        assert!(remove_list(&mut doc, "extra").is_err());
        remove_rule(&mut doc, "agents", RuleKind::Allow, "x.com").unwrap();
        assert!(remove_rule(&mut doc, "agents", RuleKind::Allow, "x.com").is_err());
    }

    #[test]
    fn put_group_round_trips() {
        let mut doc = parse("").unwrap();
        let g = GroupConfig {
            name: "lab".into(),
            clients: vec!["10.1.0.0/16".into()],
            default_deny: true,
            block_mode: crate::filter::BlockModeKind::NxDomain,
            ..GroupConfig::default()
        };
        put_group(&mut doc, &g).unwrap();
        let cfg: crate::config::Config = toml::from_str(&doc.to_string()).unwrap();
        assert_eq!(cfg.groups, [g]);
    }
}
