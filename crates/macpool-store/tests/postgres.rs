//! The PostgreSQL back end against a real server: the shared conformance suite, replicas on one
//! database, a newer schema, an unreachable and a lost database. Each test gets its own scratch
//! database next to `MACPOOL_TEST_DATABASE_URL` (see build.rs: without it these are ignored,
//! by name, with the reason).

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use macpool_core::authority::{Actor, Change, LeaseFilter, ReleaseSelector};
use macpool_store::conformance::{self, request};
use macpool_store::postgres::{self, PostgresStore};
use macpool_store::{Store, StoreError};
use tokio::net::{TcpListener, TcpStream};

async fn scratch(name: &str) -> String {
    let base = std::env::var("MACPOOL_TEST_DATABASE_URL")
        .expect("MACPOOL_TEST_DATABASE_URL was set when this test was built");
    postgres::scratch_database(&base, &format!("macpool_test_{name}"))
        .await
        .unwrap()
}

/// A store on `url` with pool `pool` over `range` and one lease, for VM `vm`.
async fn store_with_a_lease(url: &str, pool: &str, range: &str, vm: &str) -> PostgresStore {
    let store = PostgresStore::open(url).await.unwrap();
    conformance::create_pool(&store, pool, range).await;
    store
        .allocate(Actor::admin("t"), request(pool, vm))
        .await
        .unwrap();
    store
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(postgres_tests), ignore = "MACPOOL_TEST_DATABASE_URL is not set")]
async fn conformance_suite() {
    let url = scratch("conformance").await;
    conformance::run_all(
        || {
            let url = url.clone();
            async move { PostgresStore::open(&url).await.unwrap() }
        },
        true,
    )
    .await;
}

/// Two replicas allocating at once from one small pool never hand out a MAC twice, and each
/// sees the other's leases and releases at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(postgres_tests), ignore = "MACPOOL_TEST_DATABASE_URL is not set")]
async fn two_replicas_never_lease_a_mac_twice() {
    let url = scratch("two_replicas").await;
    let a = Arc::new(PostgresStore::open(&url).await.unwrap());
    let b = Arc::new(PostgresStore::open(&url).await.unwrap());
    conformance::create_pool(&*a, "r", "00155D0D0000-00155D0D00FF").await;
    let mut tasks = Vec::new();
    for i in 0..256 {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            store
                .allocate(Actor::admin("t"), request("r", &format!("vm-{i}")))
                .await
        }));
    }
    let mut macs = HashSet::new();
    for t in tasks {
        let got = t.await.unwrap().expect("256 addresses for 256 VMs");
        assert!(
            macs.insert(got[0].lease.mac),
            "{} handed out twice",
            got[0].lease.mac
        );
    }
    // The pool is full: on either replica.
    for s in [&a, &b] {
        let err = s
            .allocate(Actor::admin("t"), request("r", "one-too-many"))
            .await
            .unwrap_err();
        assert!(
            matches!(err, StoreError::Domain(ref d) if d.kind() == "pool-exhausted"),
            "{err}"
        );
        assert_eq!(s.leases(LeaseFilter::default()).await.unwrap().len(), 256);
    }
    // A release on one replica is seen by the other at once, and the MAC cools there too.
    let released = a
        .release(
            Actor::admin("t"),
            ReleaseSelector::Vm {
                vm_id: "vm-1".into(),
                adapter_id: None,
            },
        )
        .await
        .unwrap();
    let status = b.mac_status(released[0].lease.mac).await.unwrap();
    assert!(status.leases.is_empty());
    assert!(status.cooling_until.is_some());
    assert_eq!(b.pool("r".into()).await.unwrap().usage.cooling, 1);
    // Reopened, a third replica loads the same state from the tables.
    let c = PostgresStore::open(&url).await.unwrap();
    assert_eq!(
        c.leases(LeaseFilter::default()).await.unwrap(),
        a.leases(LeaseFilter::default()).await.unwrap()
    );
    assert_eq!(c.pools().await.unwrap(), b.pools().await.unwrap());
}

/// Issue 18: a later report goes into the change log as its diff, not the whole inventory
/// again, and replicas following each other's diffs keep the same inventory as the one that
/// wrote it (and as the table).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(postgres_tests), ignore = "MACPOOL_TEST_DATABASE_URL is not set")]
async fn replicas_follow_inventory_diffs_and_the_log_holds_only_the_diff() {
    use macpool_core::Mac;
    let url = scratch("inventory_diffs").await;
    let a = PostgresStore::open(&url).await.unwrap();
    let b = PostgresStore::open(&url).await.unwrap();
    let m = |v: u64| Mac::from_u64(0x00155D780000 + v).unwrap();
    let vms = |n: u64, renamed: &str| {
        let ids: Vec<String> = (0..n).map(|i| format!("desk-{i:03}")).collect();
        let mut inv = conformance::host(
            "diff-h7",
            (0..n)
                .map(|i| (ids[i as usize].as_str(), vec![m(i)], vec![]))
                .collect(),
        );
        inv.vms_mut()[1].name = renamed.into();
        inv
    };
    let reports = [
        (&a, vms(50, "first")),
        (&b, vms(50, "second")),
        (&a, vms(40, "second")),
        (&b, vms(41, "third")),
    ];
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&url)
        .await
        .unwrap();
    for (g, (store, inv)) in reports.into_iter().enumerate() {
        let generation = g as u64 + 1;
        store
            .put_inventory(Actor::admin("t"), inv.clone(), generation)
            .await
            .unwrap();
        for replica in [&a, &b] {
            let stored = replica.inventory("diff-h7".into()).await.unwrap();
            assert_eq!(
                (stored.inventory, stored.generation),
                (inv.clone(), generation)
            );
        }
        let logged: String =
            sqlx::query_scalar("SELECT changes FROM change_log ORDER BY seq DESC LIMIT 1")
                .fetch_one(&mut conn)
                .await
                .unwrap();
        let whole = logged.contains("desk-030");
        assert_eq!(
            whole,
            generation == 1,
            "report {generation} logged whole: {whole}"
        );
    }
    let again = PostgresStore::open(&url).await.unwrap();
    assert_eq!(
        again.inventory("diff-h7".into()).await.unwrap(),
        a.inventory("diff-h7".into()).await.unwrap(),
        "the table holds what the diffs made"
    );
}

/// A replica that fell behind the trimmed change log reloads from the tables.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(postgres_tests), ignore = "MACPOOL_TEST_DATABASE_URL is not set")]
async fn a_replica_behind_the_trimmed_log_reloads() {
    let url = scratch("trimmed_log").await;
    let a = PostgresStore::open(&url).await.unwrap();
    let b = PostgresStore::open(&url).await.unwrap();
    conformance::create_pool(&a, "t", "00155D0E0000-00155D0E00FF").await;
    for i in 0..5 {
        a.allocate(Actor::admin("t"), request("t", &format!("vm-{i}")))
            .await
            .unwrap();
    }
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&url)
        .await
        .unwrap();
    sqlx::query("DELETE FROM change_log")
        .execute(&mut conn)
        .await
        .unwrap();
    assert_eq!(b.leases(LeaseFilter::default()).await.unwrap().len(), 5);
    // and it goes on writing after the reload
    b.allocate(Actor::admin("t"), request("t", "vm-b"))
        .await
        .unwrap();
    assert_eq!(a.leases(LeaseFilter::default()).await.unwrap().len(), 6);
}

async fn log_entries(conn: &mut sqlx::PgConnection) -> Vec<i64> {
    sqlx::query_scalar("SELECT seq FROM change_log ORDER BY seq")
        .fetch_all(conn)
        .await
        .unwrap()
}

/// Issue 18: the change log holds what the replicas present still need, not a fixed count: the
/// entries after the oldest recorded position, and none once every replica has read them. A
/// replica that stops recording (absent) stops holding the log back, and reloads when it
/// returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(postgres_tests), ignore = "MACPOOL_TEST_DATABASE_URL is not set")]
async fn the_change_log_keeps_what_present_replicas_need() {
    let url = scratch("bounded_log").await;
    let open = || PostgresStore::open_with(&url, Duration::from_secs(3600));
    let a = open().await.unwrap();
    let b = open().await.unwrap();
    for replica in [&a, &b] {
        assert_eq!(replica.keep_position().await.unwrap(), 0);
    }
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&url)
        .await
        .unwrap();
    conformance::create_pool(&a, "t", "00155D0F0000-00155D0F00FF").await;
    for i in 0..5 {
        a.allocate(Actor::admin("t"), request("t", &format!("vm-{i}")))
            .await
            .unwrap();
    }
    let head = a.keep_position().await.unwrap();
    assert_eq!(
        log_entries(&mut conn).await.len() as i64,
        head,
        "b is behind"
    );
    assert_eq!(b.keep_position().await.unwrap(), head, "b caught up");
    a.keep_position().await.unwrap();
    assert_eq!(
        log_entries(&mut conn).await,
        Vec::<i64>::new(),
        "both read all"
    );
    for i in 5..8 {
        a.allocate(Actor::admin("t"), request("t", &format!("vm-{i}")))
            .await
            .unwrap();
    }
    let now = a.keep_position().await.unwrap();
    assert_eq!(
        log_entries(&mut conn).await,
        ((head + 1)..=now).collect::<Vec<_>>(),
        "kept from b's position on"
    );
    // b goes quiet: its position was last recorded long ago.
    sqlx::query("UPDATE replicas SET seen_ms = 0 WHERE seq = $1")
        .bind(head)
        .execute(&mut conn)
        .await
        .unwrap();
    a.keep_position().await.unwrap();
    assert_eq!(log_entries(&mut conn).await, Vec::<i64>::new());
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM replicas")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(rows, 1, "the absent replica's row went");
    // b's entries are gone: it reloads, and sees every lease.
    assert_eq!(b.leases(LeaseFilter::default()).await.unwrap().len(), 8);
}

/// Each VM row of `rows-h1` with the transaction that last wrote it.
async fn writers(conn: &mut sqlx::PgConnection) -> Vec<(i32, String)> {
    sqlx::query_as("SELECT pos, xmin::text FROM inventory_vms WHERE host = 'rows-h1' ORDER BY pos")
        .fetch_all(conn)
        .await
        .unwrap()
}

/// Issue 18: a report that changes one VM of many rewrites that VM's row and the header, and no
/// other row (each row's `xmin`, the transaction that wrote it, tells).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(postgres_tests), ignore = "MACPOOL_TEST_DATABASE_URL is not set")]
async fn a_report_rewrites_only_the_rows_of_what_changed() {
    use macpool_core::Mac;
    let url = scratch("inventory_rows").await;
    let store = PostgresStore::open(&url).await.unwrap();
    let m = |v: u64| Mac::from_u64(0x00155D7A0000 + v).unwrap();
    let ids: Vec<String> = (0..300).map(|i| format!("desk-{i:03}")).collect();
    let report = |renamed: &str, len: usize| {
        let mut inv = conformance::host(
            "rows-h1",
            (0..len)
                .map(|i| (ids[i].as_str(), vec![m(i as u64)], vec![]))
                .collect(),
        );
        inv.vms_mut()[7].name = renamed.into();
        inv
    };
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&url)
        .await
        .unwrap();
    let put = |inv, generation| store.put_inventory(Actor::admin("t"), inv, generation);
    put(report("first", 300), 1).await.unwrap();
    let before = writers(&mut conn).await;
    assert_eq!(before.len(), 300);
    put(report("second", 300), 2).await.unwrap();
    let after = writers(&mut conn).await;
    let rewritten: Vec<i32> = before
        .iter()
        .zip(&after)
        .filter(|(b, a)| b != a)
        .map(|(b, _)| b.0)
        .collect();
    assert_eq!(
        rewritten,
        vec![7],
        "only the renamed VM's row is written again"
    );
    put(report("second", 290), 3).await.unwrap();
    let shorter = writers(&mut conn).await;
    assert_eq!(shorter.len(), 290, "the positions past the end are deleted");
    assert_eq!(shorter[..], after[..290], "and nothing else is written");
    let again = PostgresStore::open(&url).await.unwrap();
    assert_eq!(
        again.inventory("rows-h1".into()).await.unwrap(),
        store.inventory("rows-h1".into()).await.unwrap(),
        "the rows read back as the authority's inventory"
    );
}

/// Issue 20: two replicas each revoking one of the last two admin tokens at once: one wins,
/// the other is refused, and an admin is left, every time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(postgres_tests), ignore = "MACPOOL_TEST_DATABASE_URL is not set")]
async fn two_replicas_cannot_revoke_the_last_two_admins() {
    use macpool_store::Role;
    let url = scratch("last_admins").await;
    let a = PostgresStore::open(&url).await.unwrap();
    let b = PostgresStore::open(&url).await.unwrap();
    let admin = Actor::admin("t");
    let mut survivor: Option<String> = None;
    for round in 0..20 {
        let (x, y) = (format!("x{round}"), format!("y{round}"));
        for id in [&x, &y] {
            a.save_token(admin.clone(), conformance::token(id, Role::Admin, None))
                .await
                .unwrap();
        }
        if let Some(last) = survivor.take() {
            b.revoke_token(admin.clone(), last).await.unwrap();
        }
        let (ra, rb) = tokio::join!(
            a.revoke_token(admin.clone(), x.clone()),
            b.revoke_token(admin.clone(), y.clone())
        );
        let refused = [&ra, &rb]
            .iter()
            .filter(|r| matches!(r, Err(StoreError::LastAdmin)))
            .count();
        assert_eq!(
            (ra.is_ok() as u8 + rb.is_ok() as u8, refused),
            (1, 1),
            "round {round}: {ra:?} {rb:?}"
        );
        let active = a
            .tokens()
            .await
            .unwrap()
            .into_iter()
            .filter(|t| t.role == Role::Admin && t.revoked.is_none())
            .count();
        assert_eq!(active, 1);
        survivor = Some(if ra.is_ok() { y } else { x });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(postgres_tests), ignore = "MACPOOL_TEST_DATABASE_URL is not set")]
async fn a_schema_from_a_newer_macpool_is_refused() {
    let url = scratch("newer_schema").await;
    drop(PostgresStore::open(&url).await.unwrap());
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&url)
        .await
        .unwrap();
    sqlx::query("UPDATE macpool_meta SET value = value + 1 WHERE key = 'schema_version'")
        .execute(&mut conn)
        .await
        .unwrap();
    let err = PostgresStore::open(&url).await.err().unwrap();
    assert!(err.contains("newer than this macpool"), "{err}");
}

/// A database written by schema version 1 (with the `leases_vm` index, the database's collation
/// on text keys and the change log as `jsonb`) is upgraded in place when a newer replica opens
/// it, and keeps its data and its log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(postgres_tests), ignore = "MACPOOL_TEST_DATABASE_URL is not set")]
async fn a_version_1_schema_is_upgraded_in_place() {
    use macpool_core::Mac;
    let url = scratch("upgrade_v1").await;
    let first = store_with_a_lease(&url, "u", "00155D0E0000-00155D0E00FF", "vm-kept").await;
    let m = |v: u64| Mac::from_u64(0x00155D790000 + v).unwrap();
    let inventory = conformance::host(
        "upgrade-h1",
        vec![
            ("vm-a", vec![m(1)], vec![(m(2), "cp-a")]),
            ("vm-b", vec![m(3)], vec![]),
        ],
    );
    first
        .put_inventory(Actor::admin("t"), inventory.clone(), 7)
        .await
        .unwrap();
    drop(first);
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&url)
        .await
        .unwrap();
    // Back to what version 1 left: one `inventories` document per host.
    sqlx::raw_sql(
        "CREATE TABLE inventories (host TEXT PRIMARY KEY, stored JSONB NOT NULL);
         INSERT INTO inventories SELECT h.host, jsonb_set(h.header, '{inventory,vms}',
           COALESCE((SELECT jsonb_agg(v.vm ORDER BY v.pos) FROM inventory_vms v
                     WHERE v.host = h.host), '[]'::jsonb)) FROM inventory_hosts h;
         DROP TABLE inventory_hosts; DROP TABLE inventory_vms; DROP TABLE replicas;
         CREATE INDEX leases_vm ON leases (vm_id);
         ALTER TABLE leases ALTER COLUMN owner_key TYPE TEXT COLLATE \"default\";
         ALTER TABLE holds ALTER COLUMN hold_key TYPE TEXT COLLATE \"default\";
         ALTER TABLE history ALTER COLUMN vm_id TYPE TEXT COLLATE \"default\";
         ALTER TABLE change_log ALTER COLUMN changes TYPE JSONB USING changes::jsonb;
         UPDATE macpool_meta SET value = 1 WHERE key = 'schema_version'",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    // Recording no position meanwhile, so that the log keeps the entries checked below.
    let store = PostgresStore::open_with(&url, Duration::from_secs(3600))
        .await
        .unwrap();
    assert_eq!(store.leases(LeaseFilter::default()).await.unwrap().len(), 1);
    let stored = store.inventory("upgrade-h1".into()).await.unwrap();
    assert_eq!(
        (stored.inventory, stored.generation),
        (inventory, 7),
        "version 4 converts the inventory documents into header and VM rows"
    );
    let version: i64 =
        sqlx::query_scalar("SELECT value FROM macpool_meta WHERE key = 'schema_version'")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!(version, postgres::schema::VERSION);
    assert_eq!(version, 4);
    let index: Option<String> = sqlx::query_scalar("SELECT to_regclass('leases_vm')::text")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(index, None, "version 2 drops the index no query reads");
    let collations: Vec<(String, Option<String>)> = sqlx::query_as(
        "SELECT c.relname || '.' || a.attname, co.collname::text FROM pg_attribute a
         JOIN pg_class c ON c.oid = a.attrelid
         LEFT JOIN pg_collation co ON co.oid = a.attcollation
         WHERE (c.relname, a.attname) IN (('leases', 'owner_key'), ('holds', 'hold_key'),
                                          ('history', 'vm_id'))
         ORDER BY 1",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let c = Some("C".to_string());
    assert_eq!(
        collations,
        vec![
            ("history.vm_id".into(), c.clone()),
            ("holds.hold_key".into(), c.clone()),
            ("leases.owner_key".into(), c),
        ]
    );
    let log_type: String = sqlx::query_scalar(
        "SELECT data_type::text FROM information_schema.columns
         WHERE table_name = 'change_log' AND column_name = 'changes'",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(log_type, "text", "version 3 keeps the change log as text");
    // The entries written before the upgrade still read as what a replica replays.
    let entries: Vec<String> = sqlx::query_scalar("SELECT changes FROM change_log ORDER BY seq")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    assert!(entries.len() >= 2, "pool and lease entries: {entries:?}");
    for entry in &entries {
        let changes: Vec<Change> = serde_json::from_str(entry).unwrap();
        assert!(!changes.is_empty(), "{entry}");
    }
    store
        .allocate(Actor::admin("t"), request("u", "vm-after"))
        .await
        .unwrap();
    assert_eq!(store.leases(LeaseFilter::default()).await.unwrap().len(), 2);
}

#[tokio::test]
async fn an_unreachable_database_is_a_clear_error() {
    // Port 1 on loopback: nothing listens there.
    let err = PostgresStore::open("postgres://macpool:secret@127.0.0.1:1/macpool")
        .await
        .err()
        .unwrap();
    assert!(err.contains("cannot connect to database"), "{err}");
    assert!(!err.contains("secret"), "the password leaked: {err}");
}

/// A TCP proxy in front of PostgreSQL that can be cut and restored, as a network partition.
struct Cuttable {
    port: u16,
    up: Arc<AtomicBool>,
}

impl Cuttable {
    async fn start(target: String) -> Cuttable {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let flag = up.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                if !flag.load(Ordering::SeqCst) {
                    continue; // dropped: connection refused in effect
                }
                let flag = flag.clone();
                let target = target.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(&target).await else {
                        return;
                    };
                    let (mut cr, mut cw) = client.split();
                    let (mut sr, mut sw) = server.split();
                    let cut = async {
                        while flag.load(Ordering::SeqCst) {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    };
                    tokio::select! {
                        _ = tokio::io::copy(&mut cr, &mut sw) => {}
                        _ = tokio::io::copy(&mut sr, &mut cw) => {}
                        _ = cut => {}
                    }
                });
            }
        });
        Cuttable { port, up }
    }

    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

/// Losing the database mid-run fails requests as unavailable (503), changes nothing, and the
/// replica recovers by itself when the database returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(postgres_tests), ignore = "MACPOOL_TEST_DATABASE_URL is not set")]
async fn a_lost_database_fails_requests_and_the_replica_recovers() {
    let url = scratch("lost_database").await;
    let target = {
        let opts: sqlx::postgres::PgConnectOptions = url.parse().unwrap();
        format!("{}:{}", opts.get_host(), opts.get_port())
    };
    let proxy = Cuttable::start(target.clone()).await;
    let proxied = url.replacen(
        &format!("{target}/"),
        &format!("127.0.0.1:{}/", proxy.port),
        1,
    );
    assert_ne!(proxied, url, "the scratch URL names host:port ({url})");
    let store = store_with_a_lease(&proxied, "l", "00155D0F0000-00155D0F00FF", "before").await;

    proxy.cut();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let err = store
        .allocate(Actor::admin("t"), request("l", "during"))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err}");
    let err = store.leases(LeaseFilter::default()).await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err}");

    proxy.restore();
    let mut recovered = None;
    for _ in 0..100 {
        match store
            .allocate(Actor::admin("t"), request("l", "after"))
            .await
        {
            Ok(a) => {
                recovered = Some(a);
                break;
            }
            Err(StoreError::Unavailable(_)) => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(e) => panic!("{e}"),
        }
    }
    assert!(recovered.is_some(), "the replica did not recover");
    let vms: Vec<String> = store
        .leases(LeaseFilter::default())
        .await
        .unwrap()
        .into_iter()
        .map(|l| l.owner.vm_id)
        .collect();
    assert_eq!(vms.len(), 2, "{vms:?}");
    assert!(
        !vms.contains(&"during".to_string()),
        "nothing half-written: {vms:?}"
    );
}

/// A replica whose database connections were closed while it sat idle (a database restart, an
/// idle timeout, an admin's `pg_terminate_backend`) answers the next request without a 503: the
/// worker and the syncer check a connection that sat idle for a second before using it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(postgres_tests), ignore = "MACPOOL_TEST_DATABASE_URL is not set")]
async fn connections_closed_while_idle_are_replaced_without_failing_a_request() {
    let url = scratch("closed_while_idle").await;
    let store = store_with_a_lease(&url, "i", "00155D0D0000-00155D0D00FF", "before").await;
    // Idle for longer than the store's check threshold (1 s).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut admin = <sqlx::PgConnection as sqlx::Connection>::connect(&url)
        .await
        .unwrap();
    let closed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity, pg_terminate_backend(pid)
         WHERE datname = current_database() AND pid <> pg_backend_pid()
           AND application_name = 'macpool'",
    )
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert!(closed >= 2, "the worker's and the syncer's: {closed}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    store
        .allocate(Actor::admin("t"), request("i", "after"))
        .await
        .expect("the first request after the connections closed");
    assert_eq!(store.leases(LeaseFilter::default()).await.unwrap().len(), 2);
}
