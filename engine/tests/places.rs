//! The queue for log positions in Redis (`Coordinator::take_place`):
//! places are handed out in order, a place given up is handed out again,
//! and finding a free place does not read every place held before it.

mod common;

use common::RedisServer;
use engine::{Coordinator, Place, RedisCoordinator, PLACE_WINDOW};

fn process(url: &str) -> RedisCoordinator {
    let c = RedisCoordinator::connect(url).expect("connect");
    c.attach("vol").expect("attach");
    c
}

/// `n` processes whose newest record is position 0, each taking a place
/// in turn: they must be handed positions 1..=n in order.
fn holding_in_order(url: &str, n: usize) -> Vec<RedisCoordinator> {
    let holders: Vec<RedisCoordinator> = (0..n).map(|_| process(url)).collect();
    for (i, p) in holders.iter().enumerate() {
        assert_eq!(
            p.take_place(0, PLACE_WINDOW, None, true).place,
            Place::Holds(i as u64 + 1),
            "process {i}"
        );
    }
    holders
}

/// Keys the server has read (GETs, also those inside scripts) so far.
fn gets(con: &mut redis::Connection) -> u64 {
    common::command_calls(con, "get")
}

#[test]
fn places_are_found_without_reading_every_held_one_and_a_place_given_up_comes_back() {
    let redis = RedisServer::start();
    let mut con = common::redis_connection(&redis.url());
    // 40 processes whose newest record is position 0 take places.
    let holders = holding_in_order(&redis.url(), 40);
    // One more, still behind at position 0: it reads the first position
    // not known to be taken, not the 40 held ones before it (and the one
    // after its newest record, which may have expired unwritten; in two
    // scripts, as a new process does not know where to look).
    let late = process(&redis.url());
    let before = gets(&mut con);
    assert_eq!(
        late.take_place(0, PLACE_WINDOW, None, true).place,
        Place::Holds(41)
    );
    let read = gets(&mut con) - before;
    assert!(read <= 6, "{read} keys read to find one free place");
    // A place given up is where the next one looks first.
    holders[4].leave_place(5);
    let next = process(&redis.url());
    assert_eq!(
        next.take_place(0, PLACE_WINDOW, None, true).place,
        Place::Holds(5)
    );
    // A process that moves to an earlier place frees its later one, which
    // is then handed out again, not skipped (a skipped place is a hole
    // every later commit waits on).
    holders[9].leave_place(10);
    assert_eq!(
        late.take_place(0, PLACE_WINDOW, Some(41), true).place,
        Place::Holds(10)
    );
    let after = process(&redis.url());
    assert_eq!(
        after.take_place(0, PLACE_WINDOW, None, true).place,
        Place::Holds(41)
    );
    assert_eq!(
        after.take_place(0, PLACE_WINDOW, Some(41), true).place,
        Place::Holds(41),
        "its own"
    );
    let last = process(&redis.url());
    assert_eq!(
        last.take_place(0, PLACE_WINDOW, None, true).place,
        Place::Holds(42)
    );
    // A queue's place asked for further ahead leaves the positions before
    // it to be found: nobody holds them.
    let queued = process(&redis.url());
    assert_eq!(
        queued.take_place(50, PLACE_WINDOW, None, false).place,
        Place::Holds(51)
    );
    let behind_it = process(&redis.url());
    assert_eq!(
        behind_it.take_place(0, PLACE_WINDOW, None, true).place,
        Place::Holds(43)
    );
}

#[test]
fn a_hundred_hosts_behind_the_same_record_each_find_a_place() {
    // Every host with a record in flight holds a place; a host whose
    // newest record is as old as theirs must still find one, or it cannot
    // go ahead and queues (at 64 simulated hosts, 7 % of commits did when
    // the window was 64 positions, and each held up the records after it).
    let redis = RedisServer::start();
    holding_in_order(&redis.url(), 100);
}

#[test]
fn a_host_sends_the_part_of_the_window_where_its_search_begins() {
    let redis = RedisServer::start();
    let mut con = common::redis_connection(&redis.url());
    let holders = holding_in_order(&redis.url(), 40);
    // A new host knows nothing of where the search begins: the first
    // part it sends is all held by others, and it sends the part where
    // the answer says the search begins.
    let late = process(&redis.url());
    let scripts = |con: &mut redis::Connection| {
        common::command_calls(con, "evalsha") + common::command_calls(con, "eval")
    };
    // Each process's listener reads the stamp with a script as it starts:
    // counting begins once they are done.
    let mut before = scripts(&mut con);
    for _ in 0..40 {
        std::thread::sleep(std::time::Duration::from_millis(50));
        let now = scripts(&mut con);
        if now == before {
            break;
        }
        before = now;
    }
    assert_eq!(
        late.take_place(0, PLACE_WINDOW, None, true).place,
        Place::Holds(41)
    );
    assert_eq!(
        scripts(&mut con) - before,
        2,
        "a part, then the part the answer points to"
    );
    // Now it knows: one script, and still the right place.
    late.leave_place(41);
    let before = scripts(&mut con);
    assert_eq!(
        late.take_place(0, PLACE_WINDOW, None, true).place,
        Place::Holds(41)
    );
    assert_eq!(scripts(&mut con) - before, 1, "the part it sent held it");
    // A place given up far before where it looks is still found.
    holders[2].leave_place(3);
    late.leave_place(41);
    assert_eq!(
        late.take_place(0, PLACE_WINDOW, None, true).place,
        Place::Holds(3)
    );
}

#[test]
fn a_place_that_expired_unwritten_below_the_first_free_one_is_handed_out_again() {
    // Hosts take positions 1..=5; the holders of 1 and 2 die, and their
    // places expire unwritten. The first position not known to be taken
    // stays at 6, where every search began: nobody was handed 1 again,
    // and every commit waited for it until one gave up after 10 s (a kill
    // storm on S3 stood still for 17 s).
    let redis = RedisServer::start();
    let mut con = common::redis_connection(&redis.url());
    let holders = holding_in_order(&redis.url(), 5);
    for seq in [1u64, 2] {
        let _: () = redis::cmd("DEL")
            .arg(format!("sopfs:vol:place:{seq:016x}"))
            .query(&mut con)
            .expect("expire");
    }
    // A commit that knows the log ends at 0 and is about to write 1.
    let next = process(&redis.url());
    assert_eq!(next.take_place(0, 1, None, true).place, Place::Holds(1));
    // A queued one, holding 4, that knows the log now ends at 1: it moves
    // to 2 and gives 4 up.
    assert_eq!(
        holders[3].take_place(1, PLACE_WINDOW, Some(4), true).place,
        Place::Holds(2)
    );
    let after = process(&redis.url());
    assert_eq!(
        after.take_place(0, PLACE_WINDOW, None, false).place,
        Place::Holds(4)
    );
    // Where positions after the log's end are held, as they should be, a
    // search still starts at the first free one.
    let busy = process(&redis.url());
    assert_eq!(
        busy.take_place(2, PLACE_WINDOW, None, true).place,
        Place::Holds(6)
    );
}
