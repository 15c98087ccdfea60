//! The XMPP link under traffic both ways, against a real Prosody: tocsin sends a user many
//! notifications while the user writes commands to it, and every notification arrives and
//! every command is answered — commands handed over together included (their answers were
//! once keyed by the millisecond they arrived in, and all but one of a batch went unanswered).
//! It also runs the link where tokio-xmpp's `Client` could stop receiving for good (ADR 0010),
//! though that race is too narrow for a run to be sure to meet it.

use anyhow::{Result, ensure};
use reqwest::Method;
use serde_json::json;
use std::time::{Duration, Instant};
use tocsin_model::Channel;
use tocsin_testkit::im::ImUser;
use tocsin_testkit::{Prosody, wait_for};
use tocsin_tests::{Harness, XMPP_SERVICE, xmpp_service};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_written_while_tocsin_sends_are_all_answered() -> Result<()> {
    const NOTIFICATIONS: usize = 150;
    const COMMANDS: usize = 150;
    let prosody = Prosody::start()?;
    let xmpp = xmpp_service(&prosody)?;
    let h = Harness::start_with("im-link", |s| {
        s.delivery.channels = vec![Channel::Xmpp];
        s.delivery.xmpp = xmpp;
    })
    .await?;
    prosody.register("ann", "ann-pw")?;
    let mut ann = ImUser::login(&prosody.addr(), "ann@localhost", "ann-pw").await?;
    ann.show(None);
    let (_, token, _) = h.create_user("ann").await?;
    h.add_destination(
        &token,
        json!({"channel": "xmpp", "address": "ann@localhost"}),
    )
    .await?;
    wait_for(Duration::from_secs(30), "Ann seen present", || async {
        let (_, v) = h
            .call(Method::GET, "/v1/policy", Some(&token), None)
            .await
            .ok()?;
        (v["present"] == json!(true)).then_some(())
    })
    .await?;

    // both ways at once: the notifications published as fast as the API takes them, the
    // commands written meanwhile
    let started = Instant::now();
    let publish = async {
        for i in 0..NOTIFICATIONS {
            let (status, v) = h
                .call(
                    Method::POST,
                    "/v1/publish",
                    Some(&token),
                    Some(json!({"title": format!("two-way {i}")})),
                )
                .await?;
            ensure!(status == 202, "publish {i}: {status} {v}");
        }
        Ok(())
    };
    for i in 0..COMMANDS {
        // a command of its own each (the same one twice in a millisecond is answered once)
        ann.say(XMPP_SERVICE, &format!("frobnicate {i}"));
    }
    publish.await?;

    let (mut notified, mut answered) = (0, 0);
    let deadline = Instant::now() + Duration::from_secs(60);
    while (notified < NOTIFICATIONS || answered < COMMANDS) && Instant::now() < deadline {
        let Ok((_, body)) = ann.next_message(Duration::from_secs(1)).await else {
            continue;
        };
        if body.starts_with("two-way ") {
            notified += 1;
        } else if body.starts_with("I did not understand \"frobnicate ") {
            answered += 1;
        }
    }
    ensure!(
        notified == NOTIFICATIONS && answered == COMMANDS,
        "{notified} of {NOTIFICATIONS} notifications and {answered} of {COMMANDS} answers \
         arrived within 60 s"
    );
    eprintln!(
        "{NOTIFICATIONS} notifications and {COMMANDS} answers in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    h.shutdown().await;
    Ok(())
}
