use super::error::{db, unique_violation};
use super::store::PostgresStore;
use crate::error::{Conflict, StoreError};
use crate::providers::{MetricProvider, MetricProviderStore};
use crate::rows;
use crate::text::{storable, storable_opt};
use crate::time::unix_ms;

#[async_trait::async_trait]
impl MetricProviderStore for PostgresStore {
    async fn insert_provider(&self, provider: &MetricProvider) -> Result<(), StoreError> {
        let headers = serde_json::to_string(&provider.headers).expect("headers serialize");
        let result = sqlx::query(
            "INSERT INTO metric_providers (team, name, kind, url, agent, headers, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(storable(&provider.team))
        .bind(storable(&provider.name))
        .bind(storable(&provider.kind))
        .bind(storable(&provider.url))
        .bind(storable_opt(provider.agent.as_ref()))
        .bind(headers)
        .bind(unix_ms(provider.created_at))
        .execute(&self.pool)
        .await;
        match result {
            Ok(_) => Ok(()),
            Err(err) if unique_violation(&err).is_some() => {
                Err(Conflict::ProviderExists { name: provider.name.clone() }.into())
            }
            Err(err) => Err(db(err)),
        }
    }

    async fn providers(&self, team: Option<&str>) -> Result<Vec<MetricProvider>, StoreError> {
        let rows =
            sqlx::query("SELECT * FROM metric_providers WHERE ($1::text IS NULL OR team = $1) ORDER BY team, name")
                .bind(storable_opt(team))
                .fetch_all(&self.pool)
                .await
                .map_err(db)?;
        Ok(rows.iter().map(rows::provider).collect())
    }

    async fn provider(&self, team: &str, name: &str) -> Result<Option<MetricProvider>, StoreError> {
        let row = sqlx::query("SELECT * FROM metric_providers WHERE team = $1 AND name = $2")
            .bind(storable(team))
            .bind(storable(name))
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        Ok(row.as_ref().map(rows::provider))
    }

    async fn delete_provider(&self, team: &str, name: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM metric_providers WHERE team = $1 AND name = $2")
            .bind(storable(team))
            .bind(storable(name))
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(done.rows_affected() > 0)
    }
}
