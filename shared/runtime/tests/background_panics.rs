//! A background job's panic, in a test binary of its own: a panic's backtrace loads the
//! binary's debug information, tens of MB that would stay resident beside the unit test that
//! measures the allocator's returned pages (`memory.rs`).

use tocsin_runtime::background::Background;

#[tokio::test]
async fn a_panicking_job_is_its_callers_error_and_the_thread_carries_on() {
    let pool = Background::start("bg-panic", 1, 0).unwrap();
    let e = pool
        .run(|| -> u32 { panic!("a job's own bug: {}", 7) })
        .await
        .unwrap_err();
    assert_eq!(e.to_string(), "the job panicked: a job's own bug: 7");
    let e = pool.run(|| -> u32 { panic!("static") }).await.unwrap_err();
    assert_eq!(e.0, "static");
    assert_eq!(
        pool.run(|| 41 + 1).await.unwrap(),
        42,
        "the one thread took the next job"
    );
}
