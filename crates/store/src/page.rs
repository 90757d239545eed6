//! One page of a list, newest first, with its filters: what the lists of
//! runs and deployments take.

/// Where a page starts: after the item created at `created_at` (ms since
/// the epoch) with `id`, in the lists' order (newest first, then by id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub created_at: i64,
    pub id: String,
}

impl Cursor {
    /// `CREATED.ID`: what the API hands out as `next`.
    pub fn encode(&self) -> String {
        format!("{}.{}", self.created_at, self.id)
    }

    pub fn decode(text: &str) -> Option<Self> {
        let (created_at, id) = text.split_once('.')?;
        let created_at = created_at.parse().ok()?;
        (!id.is_empty() && id.len() <= 64).then(|| Self { created_at, id: id.to_owned() })
    }
}

/// Which items, and how many.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Page {
    /// Only this team's items; `None`: every team's.
    pub team: Option<String>,
    /// Only items in this state (its stored spelling).
    pub state: Option<String>,
    /// Deployments: of this application; runs: of this webhook.
    pub name: Option<String>,
    /// Only items after this one.
    pub after: Option<Cursor>,
    pub limit: u32,
}

impl Page {
    /// The newest `limit` items, unfiltered.
    pub fn first(limit: u32) -> Self {
        Self { limit, ..Self::default() }
    }

    /// The cursor's parts as bound to a query: `(created_at, id)`, or nulls.
    pub(crate) fn after_parts(&self) -> (Option<i64>, Option<&str>) {
        match &self.after {
            Some(cursor) => (Some(cursor.created_at), Some(cursor.id.as_str())),
            None => (None, None),
        }
    }
}

/// The `WHERE` clause every page query shares, over parameters 1 to 5:
/// team, state, name (in column `$name`), the cursor's time and id. SQLite
/// and PostgreSQL both read `$N` as the Nth parameter, used twice here.
macro_rules! page_filter {
    ($name:literal) => {
        concat!(
            "($1 IS NULL OR team = $1) AND ($2 IS NULL OR state = $2) AND ($3 IS NULL OR ",
            $name,
            " = $3) AND ($4 IS NULL OR created_at < $4 OR (created_at = $4 AND id > $5))"
        )
    };
}

/// Binds `page` to a query of [`RUNS`] or [`DEPLOYMENTS`], on either backend.
macro_rules! bind_page {
    ($query:expr, $page:expr) => {{
        let page: &$crate::Page = $page;
        let (created_at, id) = page.after_parts();
        $query
            .bind($crate::text::storable_opt(page.team.as_ref()))
            .bind($crate::text::storable_opt(page.state.as_ref()))
            .bind($crate::text::storable_opt(page.name.as_ref()))
            .bind(created_at)
            .bind(id.map($crate::text::storable))
            .bind(i64::from(page.limit))
    }};
}
pub(crate) use bind_page;

/// A page of runs: filters as [`page_filter`], `$6` the limit.
pub(crate) const RUNS: &str =
    concat!("SELECT * FROM webhook_runs WHERE ", page_filter!("webhook"), " ORDER BY created_at DESC, id LIMIT $6");

/// A page of deployments: filters as [`page_filter`], `$6` the limit.
pub(crate) const DEPLOYMENTS: &str =
    concat!("SELECT * FROM deployments WHERE ", page_filter!("application"), " ORDER BY created_at DESC, id LIMIT $6");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_reads_back_as_written() {
        let cursor = Cursor { created_at: 1_700_000_000_123, id: "6f1c-id".into() };
        assert_eq!(Cursor::decode(&cursor.encode()), Some(cursor));
        for bad in ["", "x.y", "12", "12.", &format!("1.{}", "a".repeat(65))] {
            assert_eq!(Cursor::decode(bad), None, "{bad}");
        }
    }
}
