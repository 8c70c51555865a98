//! Statements prepared once per connection and reused.
//!
//! tokio-postgres prepares an SQL text given as a string on every call: one
//! round trip to parse it (and the server's parse and analysis) before the
//! round trip that runs it. The service's hot statements (a slot's claim,
//! a file's row on every download, the log writer's inserts) are few and
//! fixed, so each connection keeps the statements it prepared, by text.
//!
//! A prepared statement belongs to the connection that prepared it, so a
//! cache lives exactly as long as its connection: [`PreparedClient`] pairs
//! them for shared connections (its `query`, `query_one`, `query_opt` and
//! `execute` take the SQL text like [`Client`]'s and prepare it once; every
//! other method is the connection's own), and the log writer clears its own
//! cache whenever it connects anew.
use std::collections::HashMap;
use std::ops::Deref;
use std::sync::Mutex;

use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Error, GenericClient, Row, Statement};

/// How many statements one connection keeps; past it the cache starts over
/// (the log writer's multi-row inserts differ by their row count).
const MOST_KEPT: usize = 512;

/// The statements one connection has prepared, by their SQL text.
#[derive(Default)]
pub struct StatementCache {
    statements: Mutex<HashMap<String, Statement>>,
}

impl StatementCache {
    /// The statement for `sql`, prepared on `client` the first time.
    /// `client` must be (a transaction of) the connection this cache
    /// belongs to.
    pub async fn prepare<C: GenericClient + Sync>(
        &self,
        client: &C,
        sql: &str,
    ) -> Result<Statement, Error> {
        if let Some(known) = self.lock().get(sql) {
            return Ok(known.clone());
        }
        let prepared = client.prepare(sql).await?;
        let mut statements = self.lock();
        if statements.len() >= MOST_KEPT {
            statements.clear();
        }
        statements.insert(sql.to_owned(), prepared.clone());
        Ok(prepared)
    }

    /// [`GenericClient::query`] of `sql` on `client`, prepared once.
    pub async fn query<C: GenericClient + Sync>(
        &self,
        client: &C,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, Error> {
        let statement = self.prepare(client, sql).await?;
        client.query(&statement, params).await
    }

    /// [`GenericClient::query_one`] of `sql` on `client`, prepared once.
    pub async fn query_one<C: GenericClient + Sync>(
        &self,
        client: &C,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Row, Error> {
        let statement = self.prepare(client, sql).await?;
        client.query_one(&statement, params).await
    }

    /// [`GenericClient::query_opt`] of `sql` on `client`, prepared once.
    pub async fn query_opt<C: GenericClient + Sync>(
        &self,
        client: &C,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, Error> {
        let statement = self.prepare(client, sql).await?;
        client.query_opt(&statement, params).await
    }

    /// [`GenericClient::execute`] of `sql` on `client`, prepared once.
    pub async fn execute<C: GenericClient + Sync>(
        &self,
        client: &C,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, Error> {
        let statement = self.prepare(client, sql).await?;
        client.execute(&statement, params).await
    }

    /// Forgets every statement (the connection they belong to is gone).
    pub fn clear(&self) {
        self.lock().clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Statement>> {
        self.statements.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A shared connection with the statements prepared on it.
pub struct PreparedClient {
    client: Client,
    statements: StatementCache,
}

impl PreparedClient {
    /// Wraps a fresh connection.
    pub fn new(client: Client) -> PreparedClient {
        PreparedClient {
            client,
            statements: StatementCache::default(),
        }
    }

    /// [`Client::query`], with `sql` prepared once.
    pub async fn query(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, Error> {
        self.statements.query(&self.client, sql, params).await
    }

    /// [`Client::query_one`], with `sql` prepared once.
    pub async fn query_one(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Row, Error> {
        self.statements.query_one(&self.client, sql, params).await
    }

    /// [`Client::query_opt`], with `sql` prepared once.
    pub async fn query_opt(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, Error> {
        self.statements.query_opt(&self.client, sql, params).await
    }

    /// [`Client::execute`], with `sql` prepared once.
    pub async fn execute(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64, Error> {
        self.statements.execute(&self.client, sql, params).await
    }
}

impl Deref for PreparedClient {
    type Target = Client;

    fn deref(&self) -> &Client {
        &self.client
    }
}
