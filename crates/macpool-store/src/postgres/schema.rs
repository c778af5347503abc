//! Versioned schema of the PostgreSQL store. `macpool_meta.schema_version` holds the number of
//! migrations applied; a database written by a newer macpool is refused rather than misread.
//! Replicas starting together migrate one at a time (a session advisory lock).

use sqlx::{Connection, PgConnection};

/// Each entry is one migration, applied in order inside one transaction. Append only.
const MIGRATIONS: &[&str] = &[
    // 1: the whole store, written by a sequenced change log.
    r#"
    -- The head of the change log. Every writing transaction locks this row first: that is what
    -- serializes writers across replicas, and what makes `change_log.seq` gap-free in commit order.
    CREATE TABLE macpool_head (
        id   INTEGER PRIMARY KEY CHECK (id = 1),
        seq  BIGINT NOT NULL
    );
    INSERT INTO macpool_head VALUES (1, 0);
    -- What every committed batch changed, for the other replicas to replay (`Change`, JSON;
    -- kept as text since version 3).
    -- History entries are not repeated here; old entries are trimmed (a replica that fell
    -- further behind reloads from the tables).
    CREATE TABLE change_log (
        seq      BIGINT PRIMARY KEY,
        at_ms    BIGINT NOT NULL,
        replica  TEXT NOT NULL,
        changes  JSONB NOT NULL
    );
    -- The state the log leads to, one row per object, kept in the same transaction.
    CREATE TABLE pools (
        name    TEXT PRIMARY KEY,
        spec    JSONB NOT NULL,
        cursor  BIGINT NOT NULL
    );
    CREATE TABLE leases (
        owner_key  TEXT PRIMARY KEY,
        mac        BIGINT NOT NULL,
        pool       TEXT NOT NULL,
        vm_id      TEXT NOT NULL,
        host       TEXT,
        duplicate  BOOLEAN NOT NULL,
        lease      JSONB NOT NULL,
        -- Defence in depth for "no MAC leased twice", checked by the database at commit: only
        -- flagged duplicates may share a MAC.
        CONSTRAINT one_unflagged_lease_per_mac
            EXCLUDE USING btree (mac WITH =) WHERE (NOT duplicate) DEFERRABLE INITIALLY DEFERRED
    );
    CREATE INDEX leases_vm ON leases (vm_id);
    CREATE TABLE holds (
        hold_key  TEXT PRIMARY KEY,
        mac       BIGINT NOT NULL,
        vm_id     TEXT NOT NULL,
        hold      JSONB NOT NULL
    );
    CREATE TABLE cooling (
        mac       BIGINT PRIMARY KEY,
        until_ms  BIGINT NOT NULL
    );
    CREATE TABLE inventories (
        host    TEXT PRIMARY KEY,
        stored  JSONB NOT NULL
    );
    CREATE TABLE departed (
        mac    BIGINT PRIMARY KEY,
        lease  JSONB NOT NULL
    );
    CREATE TABLE blocks (
        id     BIGINT PRIMARY KEY,
        pool   TEXT NOT NULL,
        host   TEXT NOT NULL,
        state  TEXT NOT NULL,
        block  JSONB NOT NULL
    );
    CREATE TABLE history (
        id     BIGSERIAL PRIMARY KEY,
        at_ms  BIGINT NOT NULL,
        mac    BIGINT,
        vm_id  TEXT,
        entry  JSONB NOT NULL
    );
    CREATE INDEX history_mac ON history (mac, id);
    CREATE INDEX history_vm ON history (vm_id, id);
    CREATE TABLE tokens (
        id           TEXT PRIMARY KEY,
        name         TEXT NOT NULL,
        role         TEXT NOT NULL,
        host         TEXT,
        secret_hash  BYTEA NOT NULL,
        created_ms   BIGINT NOT NULL,
        revoked_ms   BIGINT
    );
    "#,
    r#"
    -- Cheaper inserts inside the serial section every replica waits on
    -- (scripts/bench-lease-insert.sh measures each):
    -- every lease lookup runs in memory and no query reads leases by VM, so this index only
    -- made each allocation's insert dearer;
    DROP INDEX IF EXISTS leases_vm;
    -- and the text keys that allocations index compare bytewise: a database collation such as
    -- C.UTF-8 or en_US costs a locale comparison per index step, and nothing here sorts text
    -- for people (the replicas order everything in memory).
    ALTER TABLE leases ALTER COLUMN owner_key TYPE TEXT COLLATE "C";
    ALTER TABLE holds ALTER COLUMN hold_key TYPE TEXT COLLATE "C";
    ALTER TABLE history ALTER COLUMN vm_id TYPE TEXT COLLATE "C";
    "#,
    r#"
    -- The change log is written once per batch and read back whole by the other replicas; no
    -- query looks inside an entry. As text it costs PostgreSQL no JSON parse when each batch
    -- writes it inside the serial section, and no JSON print when each replica reads it.
    ALTER TABLE change_log ALTER COLUMN changes TYPE TEXT;
    "#,
    r#"
    -- Inventories at fleet scale (issue 18): a host's header row and one row per VM, so that a
    -- later report writes its header and the VMs that changed, not the whole inventory again.
    -- New tables, not a changed `inventories`: a replica of an older macpool that is still
    -- running fails its next write here (and answers 503) instead of writing whole documents
    -- beside the rows.
    CREATE TABLE inventory_hosts (
        host    TEXT COLLATE "C" PRIMARY KEY,
        -- `StoredInventory` with no VMs
        header  JSONB NOT NULL
    );
    CREATE TABLE inventory_vms (
        host  TEXT COLLATE "C" NOT NULL,
        -- the VM's position in the host's report
        pos   INTEGER NOT NULL,
        vm    JSONB NOT NULL,
        PRIMARY KEY (host, pos)
    );
    INSERT INTO inventory_hosts (host, header)
        SELECT host, jsonb_set(stored, '{inventory,vms}', '[]'::jsonb) FROM inventories;
    INSERT INTO inventory_vms (host, pos, vm)
        SELECT i.host, e.n - 1, e.vm
        FROM inventories i, jsonb_array_elements(i.stored -> 'inventory' -> 'vms')
             WITH ORDINALITY AS e(vm, n);
    DROP TABLE inventories;
    -- Where each replica has read the change log to, and when it last said so: the log keeps
    -- the entries a replica seen recently still needs, and no more (issue 18).
    CREATE TABLE replicas (
        replica  TEXT PRIMARY KEY,
        seq      BIGINT NOT NULL,
        seen_ms  BIGINT NOT NULL
    );
    "#,
];

/// The schema version this binary writes.
pub const VERSION: i64 = MIGRATIONS.len() as i64;

/// Arbitrary, fixed: the advisory lock replicas take while migrating.
const MIGRATION_LOCK: i64 = 0x6d61_6370_6f6f_6c01;

/// The schema version of the database (0 when macpool never ran on it).
pub async fn version(conn: &mut PgConnection) -> Result<i64, sqlx::Error> {
    let exists: bool = sqlx::query_scalar("SELECT to_regclass('macpool_meta') IS NOT NULL")
        .fetch_one(&mut *conn)
        .await?;
    if !exists {
        return Ok(0);
    }
    sqlx::query_scalar("SELECT value FROM macpool_meta WHERE key = 'schema_version'")
        .fetch_optional(&mut *conn)
        .await
        .map(|v| v.unwrap_or(0))
}

/// Brings the schema to [`VERSION`]; refuses a newer one.
pub async fn migrate(conn: &mut PgConnection) -> Result<(), String> {
    let err = |e: sqlx::Error| format!("cannot migrate the schema: {e}");
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(MIGRATION_LOCK)
        .execute(&mut *conn)
        .await
        .map_err(err)?;
    let result = migrate_locked(conn).await;
    let _ = sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(MIGRATION_LOCK)
        .execute(&mut *conn)
        .await;
    result
}

async fn migrate_locked(conn: &mut PgConnection) -> Result<(), String> {
    let err = |e: sqlx::Error| format!("cannot migrate the schema: {e}");
    let current = version(conn).await.map_err(err)?;
    if current > VERSION {
        return Err(format!(
            "the database has schema version {current}, newer than this macpool understands \
             ({VERSION}); it was written by a newer macpool: upgrade this binary instead of \
             risking a misread"
        ));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let mut tx = conn.begin().await.map_err(err)?;
        if i == 0 {
            sqlx::raw_sql(
                "CREATE TABLE macpool_meta (key TEXT PRIMARY KEY, value BIGINT NOT NULL);
                 INSERT INTO macpool_meta VALUES ('schema_version', 0);",
            )
            .execute(&mut *tx)
            .await
            .map_err(err)?;
        }
        sqlx::raw_sql(sqlx::AssertSqlSafe(*sql))
            .execute(&mut *tx)
            .await
            .map_err(err)?;
        sqlx::query("UPDATE macpool_meta SET value = $1 WHERE key = 'schema_version'")
            .bind(i as i64 + 1)
            .execute(&mut *tx)
            .await
            .map_err(err)?;
        tx.commit().await.map_err(err)?;
    }
    Ok(())
}
