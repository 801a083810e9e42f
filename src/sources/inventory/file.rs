//! Static host-list inventory (`inventory.source = "file"`): a YAML or CSV file,
//! reloaded when it changes.
//!
//! YAML is a list of hosts, or a mapping `{hosts: [...]}`; CSV has a header row naming
//! its columns. Either way a host has the keys `agent_id`, `cloud_id`, `ip`, `ipv6`,
//! `host_id`, `biz_id`, `os_type`, and needs `agent_id`, or `cloud_id` and `ip`. The
//! agent id rule of [`Host::agent_id`] applies, so a host without `agent_id` is watched
//! as `"{cloud_id}:{ip}"`.
//!
//! A bad file is an error naming the file, the entry and the field; nothing is
//! skipped, because a skipped host would look like a deleted one. A blank file is an
//! error too (it is what a half-written file looks like); an empty inventory is
//! written `[]` (YAML) or a header row alone (CSV). Write the file atomically (write a
//! temporary file, then rename it over) so a reload never sees half of it.

use std::{
    collections::HashMap,
    fs, io,
    io::Read,
    net::{IpAddr, Ipv6Addr},
    path::{Path, PathBuf},
    sync::{Mutex, PoisonError},
    time::SystemTime,
};

use serde::{
    de::{self, value::MapAccessDeserializer, value::SeqAccessDeserializer},
    Deserialize, Deserializer,
};

use super::{Host, Rejected};

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The file could not be opened or read (including: it does not exist).
    #[error("{path}: cannot read the host list: {source}")]
    Read {
        path: String,
        #[source]
        source: io::Error,
    },
    /// The extension is not `.yaml`, `.yml` or `.csv`.
    #[error("{path}: unsupported host list format: the extension must be .yaml, .yml or .csv")]
    Format { path: String },
    /// The file is not valid YAML/CSV of the expected shape; `detail` names the entry
    /// or line and the field where the parser can.
    #[error("{path}: {detail}")]
    Syntax { path: String, detail: String },
    /// The file is larger than `inventory.max_file_bytes`; nothing of it is parsed.
    #[error("{path}: the host list is larger than {limit} bytes (inventory.max_file_bytes)")]
    TooLarge { path: String, limit: u64 },
    /// One host is unusable: `entry` is `hosts[3]` (YAML) or `line 5` (CSV).
    #[error("{path}: {entry}: {field}: {detail}")]
    Invalid {
        path: String,
        entry: String,
        field: &'static str,
        detail: String,
    },
}

/// What the last [`FileInventory::load`] saw, for the cheap change check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    NotLoaded,
    Missing,
    File(Stamp),
}

/// Cheap identity of a file version: a rewrite changes the modification time or the
/// length, a rename over it (atomic replace) changes the inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

impl Stamp {
    fn of(meta: &fs::Metadata) -> Stamp {
        #[cfg(unix)]
        let inode = std::os::unix::fs::MetadataExt::ino(meta);
        #[cfg(not(unix))]
        let inode = 0;
        Stamp {
            modified: meta.modified().ok(),
            len: meta.len(),
            inode,
        }
    }
}

pub struct FileInventory {
    path: PathBuf,
    seen: Mutex<Seen>,
    /// `inventory.max_file_bytes`.
    max_bytes: u64,
}

impl FileInventory {
    /// With the default size limit; see [`Self::with_max_bytes`].
    pub fn new(path: PathBuf) -> Self {
        FileInventory {
            path,
            seen: Mutex::new(Seen::NotLoaded),
            max_bytes: super::config::DEFAULT_MAX_FILE_BYTES,
        }
    }

    /// Refuses files larger than `max_bytes` (`inventory.max_file_bytes`).
    pub fn with_max_bytes(mut self, max_bytes: u64) -> Self {
        self.max_bytes = max_bytes;
        self
    }

    /// Reads and checks the whole file. Records what it read, so [`Self::changed`]
    /// turns false, even when the content is bad or the file is missing: a bad file is
    /// not re-read every sweep, only when it changes again (or at the inventory
    /// interval).
    pub fn load(&self) -> Result<Vec<Host>, FileError> {
        let (stamp, text) = match read(&self.path, self.max_bytes) {
            Ok(Some(read)) => read,
            Ok(None) => {
                // Recorded like bad content: not re-read until the file changes.
                if let Ok(meta) = fs::metadata(&self.path) {
                    self.record(Seen::File(Stamp::of(&meta)));
                }
                return Err(FileError::TooLarge {
                    path: self.shown(),
                    limit: self.max_bytes,
                });
            }
            Err(source) => {
                // Like bad content, an unreadable file is tried again once it changes.
                self.record(match fs::metadata(&self.path) {
                    Ok(meta) => Seen::File(Stamp::of(&meta)),
                    Err(_) => Seen::Missing,
                });
                return Err(FileError::Read {
                    path: self.shown(),
                    source,
                });
            }
        };
        // The stamp is taken before reading: a write racing the read leaves a newer
        // stamp on disk, so `changed()` reports it and the file is read again.
        self.record(Seen::File(stamp));
        self.parse(&text)
    }

    /// True when the file differs from what [`Self::load`] last read (modification
    /// time, length or inode), appeared or vanished, or was never loaded. Only reads
    /// metadata.
    pub fn changed(&self) -> bool {
        let now = match fs::metadata(&self.path) {
            Ok(meta) => Seen::File(Stamp::of(&meta)),
            Err(_) => Seen::Missing,
        };
        *self.seen.lock().unwrap_or_else(PoisonError::into_inner) != now
    }

    fn record(&self, seen: Seen) {
        *self.seen.lock().unwrap_or_else(PoisonError::into_inner) = seen;
    }

    fn shown(&self) -> String {
        self.path.display().to_string()
    }

    fn parse(&self, text: &str) -> Result<Vec<Host>, FileError> {
        let syntax = |detail: String| FileError::Syntax {
            path: self.shown(),
            detail,
        };
        if text.trim().is_empty() {
            return Err(syntax(
                "the file is blank; write `[]` (YAML) or only the header row (CSV) for an \
                 empty inventory"
                    .to_owned(),
            ));
        }
        let entries = match Kind::of(&self.path) {
            Some(Kind::Yaml) => yaml_entries(text).map_err(syntax)?,
            Some(Kind::Csv) => csv_entries(text).map_err(|p| match p {
                Problem::Syntax(detail) => syntax(detail),
                Problem::Invalid(entry, field, detail) => FileError::Invalid {
                    path: self.shown(),
                    entry,
                    field,
                    detail,
                },
            })?,
            None => return Err(FileError::Format { path: self.shown() }),
        };
        let mut hosts = Vec::with_capacity(entries.len());
        // Agent id → entry, and host id → entry, to name both sides of a duplicate.
        let mut agents: HashMap<String, String> = HashMap::with_capacity(entries.len());
        let mut host_ids: HashMap<i64, String> = HashMap::new();
        for (entry, fields) in entries {
            let invalid = |field: &'static str, detail: String| FileError::Invalid {
                path: self.shown(),
                entry: entry.clone(),
                field,
                detail,
            };
            let host = fields.into_host().map_err(|(f, d)| invalid(f, d))?;
            let agent_id = host.agent_id().map_err(|r| match r {
                Rejected::AgentIdTooLong => invalid(
                    "agent_id",
                    format!("agent id is longer than {} bytes", super::MAX_AGENT_ID_LEN),
                ),
                _ => invalid("agent_id", "no agent id can be formed".to_owned()),
            })?;
            if let Some(first) = agents.insert(agent_id.clone(), entry.clone()) {
                return Err(invalid(
                    "agent_id",
                    format!("agent id {agent_id:?} is also the agent id of {first}"),
                ));
            }
            if host.host_id != 0 {
                if let Some(first) = host_ids.insert(host.host_id, entry.clone()) {
                    return Err(invalid(
                        "host_id",
                        format!("host id {} is also the host id of {first}", host.host_id),
                    ));
                }
            }
            hosts.push(host);
        }
        Ok(hosts)
    }
}

/// Reads the file with the metadata of the very handle it reads from; `None` when it
/// is larger than `max_bytes` (by its length, or by what reading finds if it grew).
fn read(path: &Path, max_bytes: u64) -> io::Result<Option<(Stamp, String)>> {
    let file = fs::File::open(path)?;
    let stamp = Stamp::of(&file.metadata()?);
    if stamp.len > max_bytes {
        return Ok(None);
    }
    let mut text = String::new();
    file.take(max_bytes.saturating_add(1))
        .read_to_string(&mut text)?;
    if text.len() as u64 > max_bytes {
        return Ok(None);
    }
    Ok(Some((stamp, text)))
}

enum Kind {
    Yaml,
    Csv,
}

impl Kind {
    fn of(path: &Path) -> Option<Kind> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "yaml" | "yml" => Some(Kind::Yaml),
            "csv" => Some(Kind::Csv),
            _ => None,
        }
    }
}

/// One host as written in the file, before validation. `ip` may be IPv4 or IPv6 (an
/// IPv6 `ip` forms the agent id `"{cloud_id}:{ip}"` too, but GSE 1.x cannot query it);
/// addresses are stored in their canonical text form.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    agent_id: Option<String>,
    cloud_id: Option<i64>,
    ip: Option<String>,
    ipv6: Option<String>,
    host_id: Option<i64>,
    biz_id: Option<i64>,
    os_type: Option<String>,
}

/// Blank values count as absent (a CSV cell is never missing, only empty).
fn present(v: Option<String>) -> Option<String> {
    v.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty())
}

impl Entry {
    /// The host, or the field that is wrong and why.
    fn into_host(self) -> Result<Host, (&'static str, String)> {
        let agent_id = present(self.agent_id);
        let ip = present(self.ip)
            .map(|ip| {
                ip.parse::<IpAddr>()
                    .map(|a| a.to_string())
                    .map_err(|_| ("ip", format!("{ip:?} is not an IP address")))
            })
            .transpose()?;
        let ipv6 = present(self.ipv6)
            .map(|ip| {
                ip.parse::<Ipv6Addr>()
                    .map(|a| a.to_string())
                    .map_err(|_| ("ipv6", format!("{ip:?} is not an IPv6 address")))
            })
            .transpose()?;
        if agent_id.is_none() {
            match (&ip, self.cloud_id) {
                (None, _) => {
                    return Err((
                        "agent_id",
                        "missing: each host needs agent_id, or cloud_id and ip".to_owned(),
                    ))
                }
                (Some(_), None) => {
                    return Err((
                        "cloud_id",
                        "missing: a host without agent_id needs cloud_id and ip".to_owned(),
                    ))
                }
                (Some(_), Some(_)) => {}
            }
        }
        Ok(Host {
            host_id: self.host_id.unwrap_or(0),
            cloud_id: self.cloud_id.unwrap_or(0),
            biz_id: self.biz_id.unwrap_or(0),
            ip: ip.unwrap_or_default(),
            ipv6: ipv6.unwrap_or_default(),
            bk_agent_id: agent_id.unwrap_or_default(),
            // As NodeMan spells it: LINUX, WINDOWS, ...
            os_type: present(self.os_type)
                .map(|s| s.to_ascii_uppercase())
                .unwrap_or_default()
                .into(),
            nodeman_status: "".into(),
        })
    }
}

/// `(entry name, entry)` pairs; entries are named `hosts[i]` (0-based).
fn yaml_entries(text: &str) -> Result<Vec<(String, Entry)>, String> {
    // serde_yaml_ng's messages carry the path (`hosts[3].cloud_id: ...`) and position.
    let list = HostList::deserialize(serde_yaml_ng::Deserializer::from_str(text))
        .map_err(|e| e.to_string())?;
    Ok(list
        .0
        .into_iter()
        .enumerate()
        .map(|(i, e)| (format!("hosts[{i}]"), e))
        .collect())
}

/// A YAML list of hosts, or a mapping whose only key is `hosts`.
struct HostList(Vec<Entry>);

impl<'de> Deserialize<'de> for HostList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Document {
            hosts: Vec<Entry>,
        }
        struct Visitor;
        impl<'de> de::Visitor<'de> for Visitor {
            type Value = HostList;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a list of hosts, or a mapping with a `hosts` list")
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, seq: A) -> Result<HostList, A::Error> {
                Vec::deserialize(SeqAccessDeserializer::new(seq)).map(HostList)
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<HostList, A::Error> {
                Document::deserialize(MapAccessDeserializer::new(map)).map(|d| HostList(d.hosts))
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// Why a CSV file was not read: the file as a whole, or one cell (entry, field, why).
enum Problem {
    Syntax(String),
    Invalid(String, &'static str, String),
}

/// The CSV columns, by header name (matched case-insensitively).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Column {
    AgentId,
    CloudId,
    Ip,
    Ipv6,
    HostId,
    BizId,
    OsType,
}

impl Column {
    const ALL: [(Column, &'static str); 7] = [
        (Column::AgentId, "agent_id"),
        (Column::CloudId, "cloud_id"),
        (Column::Ip, "ip"),
        (Column::Ipv6, "ipv6"),
        (Column::HostId, "host_id"),
        (Column::BizId, "biz_id"),
        (Column::OsType, "os_type"),
    ];

    fn parse(header: &str) -> Option<Column> {
        Column::ALL
            .iter()
            .find(|(_, name)| name.eq_ignore_ascii_case(header))
            .map(|(c, _)| *c)
    }

    fn name(self) -> &'static str {
        Column::ALL[self as usize].1
    }

    /// Sets this column's field of `entry` from a non-empty cell.
    fn set(self, entry: &mut Entry, value: &str) -> Result<(), String> {
        let int = || {
            value
                .parse::<i64>()
                .map_err(|_| format!("{value:?} is not an integer"))
        };
        match self {
            Column::AgentId => entry.agent_id = Some(value.to_owned()),
            Column::CloudId => entry.cloud_id = Some(int()?),
            Column::Ip => entry.ip = Some(value.to_owned()),
            Column::Ipv6 => entry.ipv6 = Some(value.to_owned()),
            Column::HostId => entry.host_id = Some(int()?),
            Column::BizId => entry.biz_id = Some(int()?),
            Column::OsType => entry.os_type = Some(value.to_owned()),
        }
        Ok(())
    }
}

/// The 1-based line of the record the csv reader started reading at byte `start`:
/// the reader reports where it started, before the empty and comment lines it skipped.
fn record_line(text: &str, start: usize) -> usize {
    let mut offset = start.min(text.len());
    for line in text.get(offset..).unwrap_or("").split_inclusive('\n') {
        let content = line.trim_end_matches(['\r', '\n']);
        if !(content.is_empty() || content.starts_with('#')) {
            break;
        }
        offset += line.len();
    }
    1 + text.as_bytes()[..offset]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
}

/// `(entry name, entry)` pairs; entries are named `line N` (1-based file line).
fn csv_entries(text: &str) -> Result<Vec<(String, Entry)>, Problem> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .comment(Some(b'#'))
        .from_reader(text.as_bytes());
    let header = reader
        .headers()
        .map_err(|e| Problem::Syntax(format!("cannot read the header row: {e}")))?
        .clone();
    let mut columns = Vec::with_capacity(header.len());
    for (i, name) in header.iter().enumerate() {
        let column = Column::parse(name).ok_or_else(|| {
            let known: Vec<&str> = Column::ALL.iter().map(|(_, n)| *n).collect();
            Problem::Syntax(format!(
                "header row: unknown column {name:?} (column {}); known columns: {}",
                i + 1,
                known.join(", ")
            ))
        })?;
        if columns.contains(&column) {
            return Err(Problem::Syntax(format!(
                "header row: column {:?} appears twice",
                column.name()
            )));
        }
        columns.push(column);
    }

    let mut entries = Vec::new();
    for record in reader.records() {
        // The csv crate names the line of a record with the wrong number of fields.
        let record = record.map_err(|e| Problem::Syntax(e.to_string()))?;
        let line = record.position().map_or(0, |p| {
            record_line(text, usize::try_from(p.byte()).unwrap_or(usize::MAX))
        });
        let name = format!("line {line}");
        let mut entry = Entry::default();
        for (column, value) in columns.iter().zip(record.iter()) {
            if !value.is_empty() {
                if let Err(detail) = column.set(&mut entry, value) {
                    return Err(Problem::Invalid(name, column.name(), detail));
                }
            }
        }
        entries.push((name, entry));
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    /// A host list named `name` in a fresh directory (kept alive by the returned guard).
    fn file(name: &str, text: &str) -> (tempfile::TempDir, FileInventory) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        fs::write(&path, text).unwrap();
        (dir, FileInventory::new(path))
    }

    fn load_err(name: &str, text: &str) -> FileError {
        let (_dir, inv) = file(name, text);
        match inv.load() {
            Ok(hosts) => panic!("expected an error, got {hosts:?}"),
            Err(e) => e,
        }
    }

    fn ids(hosts: &[Host]) -> Vec<String> {
        hosts.iter().map(|h| h.agent_id().unwrap()).collect()
    }

    #[test]
    fn a_file_of_exactly_max_file_bytes_loads_and_one_byte_more_is_refused_naming_the_key() {
        let mut text = "- agent_id: a1\n".to_owned();
        let limit = 1024;
        // YAML comments pad the list to the exact size.
        while text.len() < limit {
            text.push_str(&"#".repeat((limit - text.len()).min(60)));
            text.push('\n');
            text.truncate(limit);
        }
        assert_eq!(text.len(), limit);
        let (_dir, inv) = file("hosts.yaml", &text);
        let inv = inv.with_max_bytes(limit as u64);
        assert_eq!(ids(&inv.load().unwrap()), ["a1"]);

        // One byte more: refused, and the same file is not re-read until it changes.
        fs::write(&inv.path, format!("{text}\n")).unwrap();
        assert!(inv.changed());
        let e = inv.load().unwrap_err();
        assert!(
            matches!(e, FileError::TooLarge { limit: 1024, .. }),
            "{e:?}"
        );
        assert!(
            e.to_string()
                .ends_with("the host list is larger than 1024 bytes (inventory.max_file_bytes)"),
            "{e}"
        );
        assert!(!inv.changed());

        // Back within the limit: loads again.
        fs::write(&inv.path, "- agent_id: a2\n").unwrap();
        assert_eq!(ids(&inv.load().unwrap()), ["a2"]);
    }

    #[test]
    fn yaml_list_of_hosts_loads_with_the_agent_id_rule() {
        let (_dir, inv) = file(
            "hosts.yaml",
            concat!(
                "# static inventory\n",
                "- agent_id: 0200000000000000000000000000000001\n",
                "  host_id: 7\n",
                "  biz_id: 3\n",
                "  os_type: linux\n",
                "- cloud_id: 2\n",
                "  ip: 10.0.0.2\n",
                "  ipv6: \"FE80::1\"\n",
                "- agent_id: 12345\n",
                "  cloud_id: 1\n",
                "  ip: 10.0.0.3\n",
            ),
        );
        let hosts = inv.load().unwrap();
        assert_eq!(
            ids(&hosts),
            ["0200000000000000000000000000000001", "2:10.0.0.2", "12345"]
        );
        assert_eq!(
            hosts[0],
            Host {
                host_id: 7,
                biz_id: 3,
                bk_agent_id: "0200000000000000000000000000000001".into(),
                os_type: "LINUX".into(),
                ..Host::default()
            }
        );
        assert_eq!(hosts[1].ipv6, "fe80::1");
        assert_eq!((hosts[2].cloud_id, hosts[2].ip.as_str()), (1, "10.0.0.3"));
    }

    #[test]
    fn yaml_mapping_with_hosts_loads_and_an_explicit_empty_list_is_no_hosts() {
        let (_dir, inv) = file(
            "hosts.yml",
            "hosts:\n  - {cloud_id: 0, ip: 10.0.0.1}\n  - {agent_id: abc}\n",
        );
        assert_eq!(ids(&inv.load().unwrap()), ["0:10.0.0.1", "abc"]);
        let (_dir, inv) = file("empty.yaml", "[]\n");
        assert!(inv.load().unwrap().is_empty());
        let (_dir, inv) = file("empty.yaml", "hosts: []\n");
        assert!(inv.load().unwrap().is_empty());
    }

    #[test]
    fn csv_with_a_header_row_loads_in_any_column_order() {
        let (_dir, inv) = file(
            "hosts.csv",
            "ip, cloud_id, agent_id, host_id, biz_id, os_type, ipv6\n\
             # a comment line\n\
             10.0.0.1, 0, , 1, 2, LINUX,\n\
             , , 0200000000000000000000000000000002, 2, 2, WINDOWS, ::1\n",
        );
        let hosts = inv.load().unwrap();
        assert_eq!(
            ids(&hosts),
            ["0:10.0.0.1", "0200000000000000000000000000000002"]
        );
        assert_eq!(
            hosts[0],
            Host {
                host_id: 1,
                biz_id: 2,
                ip: "10.0.0.1".into(),
                os_type: "LINUX".into(),
                ..Host::default()
            }
        );
        assert_eq!(hosts[1].ipv6, "::1");
        let (_dir, inv) = file("header-only.csv", "agent_id\n");
        assert!(inv.load().unwrap().is_empty());
    }

    #[test]
    fn a_yaml_host_without_agent_id_or_ip_is_an_error_naming_entry_and_field() {
        let e = load_err("hosts.yaml", "- agent_id: a\n- cloud_id: 0\n  host_id: 9\n");
        assert!(
            matches!(&e, FileError::Invalid { entry, field: "agent_id", .. } if entry == "hosts[1]"),
            "{e:?}"
        );
        let text = e.to_string();
        assert!(
            text.contains("hosts.yaml: hosts[1]: agent_id: missing"),
            "{text}"
        );
    }

    #[test]
    fn a_csv_host_without_agent_id_or_ip_is_an_error_naming_line_and_field() {
        let e = load_err("hosts.csv", "agent_id,cloud_id,ip\na,,\n,0,\n");
        assert!(
            e.to_string()
                .contains("hosts.csv: line 3: agent_id: missing"),
            "{e}"
        );
        // Comment lines still count as lines.
        let e = load_err("hosts.csv", "agent_id,cloud_id,ip\n# note\n\n,0,\n");
        assert!(e.to_string().contains("line 4: agent_id"), "{e}");
    }

    #[test]
    fn an_ip_without_cloud_id_is_an_error_naming_cloud_id() {
        let e = load_err("hosts.yaml", "- ip: 10.0.0.1\n");
        assert!(
            matches!(
                e,
                FileError::Invalid {
                    field: "cloud_id",
                    ..
                }
            ),
            "{e:?}"
        );
    }

    #[test]
    fn an_unknown_csv_column_is_an_error_naming_it() {
        let e = load_err("hosts.csv", "agent_id,hostname\na,web-1\n");
        let text = e.to_string();
        assert!(text.contains("unknown column \"hostname\""), "{text}");
        assert!(text.contains("hosts.csv"), "{text}");
    }

    #[test]
    fn an_unknown_yaml_key_is_an_error_naming_entry_and_key() {
        let e = load_err(
            "hosts.yaml",
            "hosts:\n- agent_id: a\n- agent_id: b\n  hostname: x\n",
        );
        let text = e.to_string();
        assert!(
            text.contains("hosts[1]: unknown field `hostname`"),
            "{text}"
        );
    }

    #[test]
    fn a_bad_ip_is_an_error_naming_entry_and_field() {
        let e = load_err("hosts.yaml", "- cloud_id: 0\n  ip: 10.0.0.300\n");
        assert!(
            e.to_string()
                .contains("hosts[0]: ip: \"10.0.0.300\" is not an IP address"),
            "{e}"
        );
        let e = load_err("hosts.csv", "cloud_id,ip\n0,10.0.0.1\n0,web-1\n");
        assert!(e.to_string().contains("line 3: ip: \"web-1\""), "{e}");
        let e = load_err("hosts.csv", "agent_id,ipv6\na,10.0.0.1\n");
        assert!(e.to_string().contains("line 2: ipv6:"), "{e}");
    }

    #[test]
    fn a_wrongly_typed_value_is_an_error_naming_entry_and_field() {
        let e = load_err(
            "hosts.yaml",
            "- agent_id: a\n- cloud_id: zero\n  ip: 10.0.0.1\n",
        );
        assert!(e.to_string().contains("[1].cloud_id: invalid type"), "{e}");
        let e = load_err("hosts.csv", "cloud_id,ip\nzero,10.0.0.1\n");
        assert!(
            e.to_string()
                .contains("line 2: cloud_id: \"zero\" is not an integer"),
            "{e}"
        );
    }

    #[test]
    fn duplicate_agent_ids_are_an_error_naming_both_entries() {
        let e = load_err(
            "hosts.yaml",
            "- {cloud_id: 0, ip: 10.0.0.1}\n- {agent_id: \"0:10.0.0.1\"}\n",
        );
        assert!(
            e.to_string().contains(
                "hosts[1]: agent_id: agent id \"0:10.0.0.1\" is also the agent id of hosts[0]"
            ),
            "{e}"
        );
    }

    #[test]
    fn a_blank_or_malformed_file_is_an_error_not_an_empty_inventory() {
        let e = load_err("hosts.yaml", "\n  \n");
        assert!(e.to_string().contains("blank"), "{e}");
        let e = load_err("hosts.yaml", "hosts: [\n");
        assert!(matches!(e, FileError::Syntax { .. }), "{e:?}");
        let e = load_err("hosts.yaml", "just a string\n");
        assert!(e.to_string().contains("a list of hosts"), "{e}");
        let e = load_err("hosts.csv", "agent_id,ip\na,10.0.0.1,extra\n");
        assert!(matches!(e, FileError::Syntax { .. }), "{e:?}");
        let e = load_err("hosts.txt", "agent_id\n");
        assert!(matches!(e, FileError::Format { .. }), "{e:?}");
    }

    #[test]
    fn a_missing_file_is_a_read_error_naming_it() {
        let inv = FileInventory::new(PathBuf::from("/nonexistent/agentwatch/hosts.yaml"));
        let e = inv.load().unwrap_err();
        assert!(matches!(e, FileError::Read { .. }), "{e:?}");
        assert!(
            e.to_string()
                .starts_with("/nonexistent/agentwatch/hosts.yaml:"),
            "{e}"
        );
    }

    #[test]
    fn changed_is_false_after_load_and_true_after_a_rewrite() {
        let (dir, inv) = file("hosts.yaml", "- agent_id: a\n");
        assert!(inv.changed(), "never loaded");
        assert_eq!(inv.load().unwrap().len(), 1);
        assert!(!inv.changed());
        assert!(!inv.changed(), "checking does not reset anything");

        // Appending keeps the inode and may keep the mtime tick; the length differs.
        let path = dir.path().join("hosts.yaml");
        let mut f = fs::OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"- agent_id: b\n").unwrap();
        drop(f);
        assert!(inv.changed());
        assert_eq!(inv.load().unwrap().len(), 2);
        assert!(!inv.changed());

        // Atomic replace with the same length: a new inode.
        let tmp = dir.path().join("hosts.tmp");
        fs::write(&tmp, "- agent_id: c\n- agent_id: d\n").unwrap();
        fs::rename(&tmp, &path).unwrap();
        assert!(inv.changed());
        assert_eq!(ids(&inv.load().unwrap()), ["c", "d"]);
        assert!(!inv.changed());
    }

    #[test]
    fn changed_notices_the_file_vanishing_and_appearing() {
        let (dir, inv) = file("hosts.csv", "agent_id\na\n");
        inv.load().unwrap();
        let path = dir.path().join("hosts.csv");
        fs::remove_file(&path).unwrap();
        assert!(inv.changed());
        assert!(matches!(inv.load(), Err(FileError::Read { .. })));
        assert!(!inv.changed(), "still missing, as last loaded");
        fs::write(&path, "agent_id\nb\n").unwrap();
        assert!(inv.changed());
        assert_eq!(ids(&inv.load().unwrap()), ["b"]);
    }

    #[test]
    fn a_bad_file_is_not_reread_until_it_changes() {
        let (dir, inv) = file("hosts.yaml", "- ip: nope\n");
        assert!(inv.load().is_err());
        assert!(!inv.changed());
        fs::write(
            dir.path().join("hosts.yaml"),
            "- {cloud_id: 0, ip: 10.0.0.9}\n",
        )
        .unwrap();
        assert!(inv.changed());
        assert_eq!(ids(&inv.load().unwrap()), ["0:10.0.0.9"]);
    }
}
