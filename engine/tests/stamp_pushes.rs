//! Pushes of the commit stamp through a real redis-server: one push per
//! interval reaches the listeners however many raises there are, and every
//! raise is pushed in the end, also when whoever shut the push gate died
//! before its push at the interval's end.

mod common;

use common::RedisServer;
use engine::{Coordinator, RedisCoordinator};
use std::time::{Duration, Instant};

/// A coordinator of volume `volume` whose listener is subscribed.
fn listening(redis: &RedisServer, volume: &str) -> RedisCoordinator {
    let c = RedisCoordinator::connect(&redis.url()).expect("redis");
    c.attach(volume).expect("attach");
    let t = Instant::now();
    while c.stamp_hint().is_none() {
        assert!(t.elapsed() < Duration::from_secs(5), "never subscribed");
        std::thread::sleep(Duration::from_millis(5));
    }
    c
}

/// Waits until `c` was pushed `seq` or later; how long that took.
fn hears(c: &RedisCoordinator, seq: u64) -> Duration {
    let t = Instant::now();
    loop {
        if c.stamp_hint().is_some_and(|s| s >= seq) {
            return t.elapsed();
        }
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "stamp {seq} never pushed (heard {:?})",
            c.stamp_hint()
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A server, a connection to it, and two listening processes of volume "v".
fn two_listeners() -> (
    RedisServer,
    redis::Connection,
    RedisCoordinator,
    RedisCoordinator,
) {
    let redis = RedisServer::start();
    let con = common::redis_connection(&redis.url());
    let (a, b) = (listening(&redis, "v"), listening(&redis, "v"));
    (redis, con, a, b)
}

fn publishes(con: &mut redis::Connection) -> u64 {
    common::command_calls(con, "publish")
}

/// 300 raises from two of 64 processes, as fast as they go: every listener
/// hears the last one, and the server pushed far fewer than one per raise
/// (every push wakes every listener: pushing each raise made hosts x
/// commits wake-ups).
#[test]
fn a_burst_of_raises_is_pushed_whole_in_a_few_pushes() {
    let redis = RedisServer::start();
    let mut con = common::redis_connection(&redis.url());
    let hosts: Vec<RedisCoordinator> = (0..64).map(|_| listening(&redis, "v")).collect();
    let before = publishes(&mut con);
    let started = Instant::now();
    for seq in 1..=300u64 {
        hosts[seq as usize % 2].publish_stamp(seq);
    }
    let took = started.elapsed();
    for c in &hosts {
        hears(c, 300);
    }
    let pushed = publishes(&mut con) - before;
    // 64 listeners shut the gate for 6 ms a push; a push at each gate's
    // end: bounded by the burst's length, not by its raises.
    let bound = (took.as_millis() as u64 + 50) / 6 + 5;
    assert!(
        pushed <= bound.min(150),
        "{pushed} pushes for 300 raises in {took:?}"
    );
}

/// With few listeners every raise is pushed at once: the gate costs them
/// no wait.
#[test]
fn few_listeners_hear_every_raise_at_once() {
    let (_redis, mut con, writer, reader) = two_listeners();
    let before = publishes(&mut con);
    for seq in 1..=50u64 {
        writer.publish_stamp(seq);
    }
    assert_eq!(publishes(&mut con) - before, 50);
    hears(&reader, 50);
}

/// A process shut the gate and died before its push at the interval's end
/// (here: a gate set by hand, for longer than any process sets it). A
/// raise the gate held back is pushed anyway, by the process that raised
/// it, once it has not heard it pushed.
#[test]
fn a_raise_held_back_by_a_dead_processs_gate_is_pushed_by_its_raiser() {
    let (_redis, mut con, writer, reader) = two_listeners();
    writer.publish_stamp(5);
    hears(&reader, 5);
    let _: () = redis::cmd("SET")
        .arg("sopfs:v:push-gate")
        .arg(5)
        .arg("PX")
        .arg(400)
        .query(&mut con)
        .expect("shut the gate");
    writer.publish_stamp(6);
    let seq: u64 = redis::cmd("GET")
        .arg("sopfs:v:seq")
        .query(&mut con)
        .expect("stamp");
    assert_eq!(seq, 6, "the stamp is raised at once, the push waits");
    assert!(
        reader.stamp_hint().is_some_and(|s| s < 6),
        "the gate held the push back"
    );
    hears(&reader, 6);
    hears(&writer, 6);
}
