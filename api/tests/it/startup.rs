//! The api binary started while PostgreSQL is unreachable: it listens at
//! once, answers `/healthz`, fails `/readyz` and waits; once PostgreSQL
//! answers it stores its bootstrap token and serves requests, without having
//! exited. `migrate` waits for the database the same way.

use syncfleet_testkit::{
    Forwarder, TestEnv, becomes_ready, binary, free_port, http, stays_alive_unready, stop_gracefully,
};

const BOOTSTRAP_TOKEN: &str = "sf_bootstrap_token_for_the_startup_test_0123456789abcdef0123456789";

// The forwarder runs on this runtime: stopping a service blocks one thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_started_before_postgresql_waits_for_it_then_serves() {
    let env = TestEnv::new().await;
    let database = Forwarder::to_url(&env.database_url);
    let port = free_port();
    let mut api = env.spawn(
        "syncfleet-api",
        &[
            ("SYNCFLEET_DATABASE_URL", &database.url(&env.database_url)),
            ("SYNCFLEET_API_LISTEN", &format!("127.0.0.1:{port}")),
            ("SYNCFLEET_BOOTSTRAP_ADMIN_TOKEN", BOOTSTRAP_TOKEN),
        ],
    );
    stays_alive_unready(&mut api, port).await;

    database.open().await;
    becomes_ready(port).await;
    let address = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let answer = http(address, "GET", "/v1/organizations", Some(BOOTSTRAP_TOKEN)).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(api.try_wait().unwrap().is_none(), "the api exited");
    stop_gracefully(api);
    env.cleanup().await;
}

// The forwarder runs on this runtime: stopping a service blocks one thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_waits_for_postgresql_then_applies_the_migrations() {
    let env = TestEnv::new().await;
    // A fresh, empty database behind a closed forwarder.
    let empty = format!("{}_empty", env.database);
    sqlx::query(&format!("CREATE DATABASE {empty}"))
        .execute(&env.pool)
        .await
        .unwrap();
    let empty_url = env.database_url.replace(&env.database, &empty);
    let database = Forwarder::to_url(&empty_url);
    let mut migrate = std::process::Command::new(binary("syncfleet-api"))
        .envs(env.env_vars(&[("SYNCFLEET_DATABASE_URL", &database.url(&empty_url))]))
        .arg("migrate")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..15 {
        assert!(
            migrate.try_wait().unwrap().is_none(),
            "migrate exited without a database"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    database.open().await;
    let status = tokio::task::spawn_blocking(move || migrate.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "migrate failed: {status}");
    let mut connection = <sqlx::PgConnection as sqlx::Connection>::connect(&empty_url)
        .await
        .unwrap();
    let tables: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_tables WHERE tablename = 'organizations'")
        .fetch_one(&mut connection)
        .await
        .unwrap();
    assert_eq!(tables, 1, "the migrations were applied");
    sqlx::Connection::close(connection).await.unwrap();
    sqlx::query(&format!("DROP DATABASE {empty} WITH (FORCE)"))
        .execute(&env.pool)
        .await
        .unwrap();
    env.cleanup().await;
}
