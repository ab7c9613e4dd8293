//! The status page (`/`) and its data (`/status.json`).
//!
//! The HTML is rendered on the server, so the counts and the first page of each
//! group's down and forced-down members are readable without JavaScript (and
//! pager links work without it). A small script then fetches `/status.json`
//! every two seconds and redraws the same parts, so a member that dies shows as
//! down without a reload. Member ids and metadata are text everywhere: escaped
//! in the HTML, set through `textContent` by the script.

use std::fmt::Write as _;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use servicegroup_core::chrono::{DateTime, SecondsFormat, Utc};
use servicegroup_core::{GroupId, Metadata};

use crate::collector::{FleetView, GroupView};
use crate::snapshot::Shown;

/// Members per page of a group's down and forced-down list.
pub const PAGE_SIZE: usize = 100;

/// Which page of which group's list (`?group=G&page=N`; other groups show page 1).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct PageQuery {
    /// The group whose list is paged.
    pub group: Option<String>,
    /// The page of that group's list, from 1.
    pub page: Option<usize>,
}

impl PageQuery {
    fn page_of(&self, group: &GroupId) -> usize {
        match (&self.group, self.page) {
            (Some(g), Some(p)) if g == group.as_str() => p.max(1),
            _ => 1,
        }
    }
}

/// `/status.json`: the page's data.
#[derive(Debug, Serialize)]
pub struct StatusJson {
    /// RFC 3339 time of the latest round of listings, or null before the first.
    pub taken_at: Option<String>,
    /// Why the groups could not be listed, or null.
    pub error: Option<String>,
    /// Every group, sorted by id.
    pub groups: Vec<GroupJson>,
}

/// One group in `/status.json`.
#[derive(Debug, Serialize)]
pub struct GroupJson {
    /// Group id.
    pub group: String,
    /// Members up (null when never listed).
    pub up: Option<u64>,
    /// Members down, not forced down.
    pub down: Option<u64>,
    /// Members forced down.
    pub forced_down: Option<u64>,
    /// Every member.
    pub total: Option<u64>,
    /// Age of the oldest heartbeat among the members up, in seconds.
    pub oldest_up_age_seconds: Option<f64>,
    /// Why the latest listing failed (the figures are then the last good ones).
    pub error: Option<String>,
    /// This page of the down and forced-down members.
    pub page: usize,
    /// Pages in all (at least 1).
    pub pages: usize,
    /// The members of this page: down first, oldest heartbeat first.
    pub members: Vec<MemberJson>,
}

/// One member not up.
#[derive(Debug, Serialize)]
pub struct MemberJson {
    /// Member id.
    pub member: String,
    /// `down` or `forced_down`.
    pub state: &'static str,
    /// RFC 3339 time of the last heartbeat, or null.
    pub last_heartbeat: Option<String>,
    /// Its age in seconds, or null.
    pub age_seconds: Option<f64>,
    /// The instance holding the record (32 hex digits).
    pub instance: String,
    /// What the member says about itself.
    pub metadata: Metadata,
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn seconds(d: std::time::Duration) -> f64 {
    (d.as_secs_f64() * 10.0).round() / 10.0
}

/// The page's data for `query`.
pub fn status_json(view: &FleetView, query: &PageQuery) -> StatusJson {
    StatusJson {
        taken_at: view
            .taken_at
            .map(|t: SystemTime| rfc3339(DateTime::<Utc>::from(t))),
        error: view.error.clone(),
        groups: view.groups.iter().map(|g| group_json(g, query)).collect(),
    }
}

fn group_json(view: &GroupView, query: &PageQuery) -> GroupJson {
    let snapshot = view.snapshot.as_ref();
    let not_up = snapshot.map_or(&[][..], |s| &s.not_up[..]);
    let pages = not_up.len().div_ceil(PAGE_SIZE).max(1);
    let page = query.page_of(&view.group).min(pages);
    let members = not_up
        .iter()
        .skip((page - 1) * PAGE_SIZE)
        .take(PAGE_SIZE)
        .map(|m| MemberJson {
            member: m.member.to_string(),
            state: Shown::of(m).as_str(),
            last_heartbeat: m.last_heartbeat.map(rfc3339),
            age_seconds: m.age.map(seconds),
            instance: m.holder.instance.to_string(),
            metadata: m.metadata.clone(),
        })
        .collect();
    GroupJson {
        group: view.group.to_string(),
        up: snapshot.map(|s| s.up),
        down: snapshot.map(|s| s.down),
        forced_down: snapshot.map(|s| s.forced_down),
        total: snapshot.map(|s| s.total()),
        oldest_up_age_seconds: snapshot.and_then(|s| s.oldest_up_age).map(seconds),
        error: view.error.clone(),
        page,
        pages,
        members,
    }
}

/// Escapes text for HTML element content and quoted attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn cell(v: Option<u64>) -> String {
    v.map_or_else(|| "–".to_owned(), |n| n.to_string())
}

/// The whole page for `query`, rendered on the server.
pub fn render(view: &FleetView, query: &PageQuery) -> String {
    let data = status_json(view, query);
    let mut html = String::with_capacity(8192);
    html.push_str(HEAD);
    let _ = write!(
        html,
        "<p id=\"taken\">{}</p>\n<p id=\"error\" class=\"error\">{}</p>\n",
        escape(&taken_line(&data)),
        escape(data.error.as_deref().unwrap_or(""))
    );
    html.push_str(
        "<table id=\"summary\"><thead><tr><th>group</th><th>up</th><th>down</th>\
         <th>forced down</th><th>total</th><th>oldest heartbeat (up)</th><th></th></tr></thead><tbody>\n",
    );
    for g in &data.groups {
        let _ = writeln!(
            html,
            "<tr data-group=\"{name}\"><td>{name}</td><td class=\"up\">{}</td><td class=\"down\">{}</td>\
             <td class=\"forced\">{}</td><td>{}</td><td>{}</td><td class=\"error\">{}</td></tr>",
            cell(g.up),
            cell(g.down),
            cell(g.forced_down),
            cell(g.total),
            g.oldest_up_age_seconds
                .map_or_else(|| "–".to_owned(), |a| format!("{a:.1} s")),
            escape(g.error.as_deref().unwrap_or("")),
            name = escape(&g.group),
        );
    }
    html.push_str("</tbody></table>\n<div id=\"members\">\n");
    for g in data.groups.iter().filter(|g| !g.members.is_empty()) {
        let name = escape(&g.group);
        let _ = write!(
            html,
            "<section data-group=\"{name}\"><h2>{name}: down and forced down</h2>\n<table class=\"members\"><thead><tr>\
             <th>member</th><th>state</th><th>last heartbeat</th><th>age</th><th>instance</th><th>metadata</th>\
             </tr></thead><tbody>\n"
        );
        for m in &g.members {
            let _ = writeln!(
                html,
                "<tr data-member=\"{id}\" data-state=\"{state}\" class=\"{state}\"><td>{id}</td><td>{state}</td>\
                 <td>{}</td><td>{}</td><td><code>{}</code></td><td>{}</td></tr>",
                escape(m.last_heartbeat.as_deref().unwrap_or("–")),
                m.age_seconds
                    .map_or_else(|| "–".to_owned(), |a| format!("{a:.1} s")),
                escape(&m.instance),
                escape(&metadata_text(&m.metadata)),
                id = escape(&m.member),
                state = m.state,
            );
        }
        html.push_str("</tbody></table>\n");
        if g.pages > 1 {
            let q = encode_query(&g.group);
            let _ = write!(html, "<p class=\"pager\">page {} of {}", g.page, g.pages);
            if g.page > 1 {
                let _ = write!(
                    html,
                    " <a href=\"?group={q}&amp;page={}\">previous</a>",
                    g.page - 1
                );
            }
            if g.page < g.pages {
                let _ = write!(
                    html,
                    " <a href=\"?group={q}&amp;page={}\">next</a>",
                    g.page + 1
                );
            }
            html.push_str("</p>\n");
        }
        html.push_str("</section>\n");
    }
    html.push_str("</div>\n");
    html.push_str(SCRIPT);
    html.push_str("</body></html>\n");
    html
}

fn taken_line(data: &StatusJson) -> String {
    match &data.taken_at {
        Some(t) => format!("as of {t}"),
        None => "waiting for the first listing".to_owned(),
    }
}

/// Metadata as `k=v, k=v` (the page shows it as text).
fn metadata_text(metadata: &Metadata) -> String {
    metadata
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Percent-encodes a group id for a query string.
fn encode_query(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// The page up to its first element: styles and the title.
const HEAD: &str = include_str!("../assets/head.html");

/// Redraws the counts and the member lists from `/status.json` every 2 s. Every
/// value is set with `textContent`: ids and metadata are never parsed as HTML.
const SCRIPT: &str = include_str!("../assets/status.js");

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::GroupSnapshot;
    use servicegroup_core::{Holder, MemberId, MemberStatus, State};
    use std::time::Duration;

    fn down(id: &str, age: u64) -> MemberStatus {
        MemberStatus {
            group: GroupId::new("g").unwrap(),
            member: MemberId::new(id).unwrap(),
            state: State::Down,
            forced_down: false,
            last_heartbeat: None,
            age: Some(Duration::from_secs(age)),
            holder: Holder::UNKNOWN,
            holder_since: None,
            metadata: Metadata::new(),
        }
    }

    fn view(members: Vec<MemberStatus>) -> FleetView {
        let group = GroupId::new("g").unwrap();
        FleetView {
            groups: vec![GroupView {
                group: group.clone(),
                snapshot: Some(GroupSnapshot::from_members(group, members)),
                error: None,
            }],
            taken_at: Some(SystemTime::now()),
            error: None,
        }
    }

    #[test]
    fn ids_are_escaped_in_the_html() {
        let html = render(
            &view(vec![down("<img/src=x/onerror=alert(1)>", 90)]),
            &PageQuery::default(),
        );
        assert!(!html.contains("<img/src"), "{html}");
        assert!(html.contains("&lt;img/src=x/onerror=alert(1)&gt;"));
    }

    #[test]
    fn long_lists_are_paged() {
        let members: Vec<_> = (0..250)
            .map(|i| down(&format!("m{i:03}"), 1000 - i))
            .collect();
        let v = view(members);
        let first = status_json(&v, &PageQuery::default());
        assert_eq!((first.groups[0].page, first.groups[0].pages), (1, 3));
        assert_eq!(first.groups[0].members.len(), PAGE_SIZE);
        assert_eq!(first.groups[0].members[0].member, "m000", "oldest first");
        let third = status_json(
            &v,
            &PageQuery {
                group: Some("g".into()),
                page: Some(3),
            },
        );
        assert_eq!(third.groups[0].members.len(), 50);
        assert_eq!(third.groups[0].members[0].member, "m200");
        // Past the end: the last page.
        let far = status_json(
            &v,
            &PageQuery {
                group: Some("g".into()),
                page: Some(99),
            },
        );
        assert_eq!(far.groups[0].page, 3);
        let html = render(&v, &PageQuery::default());
        assert!(html.contains("page 1 of 3") && html.contains("?group=g&amp;page=2"));
    }

    #[test]
    fn group_ids_are_percent_encoded_in_links() {
        assert_eq!(encode_query("a b&c/ü"), "a+b%26c%2F%C3%BC");
    }
}
