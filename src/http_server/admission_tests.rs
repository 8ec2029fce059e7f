//! Unit tests of admission: parking beyond a peer's share, promotion in turn, the
//! exceptions that close instead, and the peer key.

use super::*;

fn ip(last: u8) -> IpAddr {
    IpAddr::from([127, 0, 0, last])
}

fn limits(per_peer: usize, total: usize, parked: usize) -> Limits {
    Limits {
        requests: 4,
        per_peer,
        total,
        parked_per_peer: parked,
        parked_total: parked,
    }
}

fn now(admit: Admit) -> Arc<Connection> {
    match admit {
        Admit::Now(c) => c,
        Admit::Parked(_) => panic!("parked, expected to be served now"),
    }
}

fn parked(admit: Admit) -> Parked {
    match admit {
        Admit::Parked(p) => p,
        Admit::Now(_) => panic!("served now, expected to be parked"),
    }
}

/// The connection a parked place was promoted to, if it was.
fn promoted_now(p: &mut Parked) -> Option<Arc<Connection>> {
    p.promoted.try_recv().ok()
}

#[test]
fn beyond_its_share_a_peer_s_new_connections_are_parked_and_promoted_in_turn() {
    let a = Admission::new(limits(2, 100, 10));
    let first = now(a.admit(ip(2)));
    let second = now(a.admit(ip(2)));
    let other = now(a.admit(ip(3)));
    let mut third = parked(a.admit(ip(2)));
    let mut fourth = parked(a.admit(ip(2)));
    assert_eq!(a.waiting(), (3, 2));
    assert!(!first.closed.is_cancelled() && !second.closed.is_cancelled());
    assert!(promoted_now(&mut third).is_none());
    // Another peer's head does not let this peer's parked ones in.
    other.head_arrived();
    assert!(promoted_now(&mut third).is_none());
    first.head_arrived();
    let third = promoted_now(&mut third).expect("the oldest parked one is promoted");
    assert!(
        promoted_now(&mut fourth).is_none(),
        "one place, one promotion"
    );
    drop(second);
    let fourth = promoted_now(&mut fourth);
    assert!(fourth.is_some(), "then the next, in turn");
    assert_eq!(
        a.waiting(),
        (2, 0),
        "third and fourth (the other's head arrived)"
    );
    assert_eq!(a.take_counts(), (0, 2), "nothing closed, two parked");
    drop(third);
    assert_eq!(a.waiting(), (1, 0));
}

#[test]
fn a_parked_connection_that_gives_up_leaves_its_place_to_the_next() {
    let a = Admission::new(limits(1, 100, 10));
    let waiting = now(a.admit(ip(2)));
    let gave_up = parked(a.admit(ip(2)));
    let mut next = parked(a.admit(ip(2)));
    drop(gave_up);
    assert_eq!(a.waiting(), (1, 1));
    waiting.head_arrived();
    let next = promoted_now(&mut next);
    assert!(next.is_some());
    assert_eq!(a.waiting(), (1, 0));
}

#[test]
fn an_idle_kept_alive_connection_makes_room_instead_of_a_new_one_being_parked() {
    let a = Admission::new(limits(1, 100, 10));
    let kept_alive = now(a.admit(ip(2)));
    kept_alive.head_arrived();
    kept_alive.start_waiting();
    let newcomer = now(a.admit(ip(2)));
    assert!(kept_alive.closed.is_cancelled(), "the idle one is closed");
    assert!(!newcomer.closed.is_cancelled());
    assert_eq!(a.take_counts(), (1, 0));
}

#[test]
fn beyond_the_parking_room_the_oldest_waiting_connection_of_the_peer_is_closed() {
    let a = Admission::new(limits(2, 100, 1));
    let first = now(a.admit(ip(2)));
    let second = now(a.admit(ip(2)));
    let other = now(a.admit(ip(3)));
    let _parked = parked(a.admit(ip(2)));
    let newest = now(a.admit(ip(2)));
    assert!(first.closed.is_cancelled(), "the oldest of that peer goes");
    assert!(!second.closed.is_cancelled() && !newest.closed.is_cancelled());
    assert!(!other.closed.is_cancelled(), "another peer is not touched");
    assert_eq!(a.take_counts(), (1, 1));
    assert_eq!(a.take_counts(), (0, 0));
}

#[test]
fn with_the_total_waiting_the_peers_holding_most_park_and_the_others_get_in() {
    let a = Admission::new(limits(4, 4, 10));
    let a1 = now(a.admit(ip(2)));
    let _a2 = now(a.admit(ip(2)));
    let _b1 = now(a.admit(ip(3)));
    let _b2 = now(a.admit(ip(3)));
    // Four waiting from two peers: an equal part is two each.
    let mut a3 = parked(a.admit(ip(2)));
    let newcomer = now(a.admit(ip(4)));
    assert!(
        a1.closed.is_cancelled(),
        "the one waiting longest made room"
    );
    assert!(!newcomer.closed.is_cancelled());
    assert_eq!(a.waiting(), (4, 1));
    assert!(promoted_now(&mut a3).is_none());
    drop(newcomer);
    let a3 = promoted_now(&mut a3);
    assert!(a3.is_some(), "room again: the parked one gets in");
    assert_eq!(a.waiting(), (4, 0));
}

#[test]
fn a_departure_lets_in_any_peer_that_may_wait_not_only_the_longest_parked_one_s() {
    let a = Admission::new(limits(2, 8, 10));
    let _y: Vec<_> = (0..2).map(|_| now(a.admit(ip(2)))).collect();
    let _py = parked(a.admit(ip(2)));
    let _x1 = now(a.admit(ip(3)));
    let z: Vec<_> = (0..2).map(|_| now(a.admit(ip(4)))).collect();
    let _w: Vec<_> = (0..2).map(|_| now(a.admit(ip(5)))).collect();
    let _v1 = now(a.admit(ip(6)));
    assert_eq!(a.waiting(), (8, 1));
    // Full, five peers: an equal part is 1, which x holds, so its next one parks.
    let mut px = parked(a.admit(ip(3)));
    z[0].head_arrived();
    let px = promoted_now(&mut px);
    assert!(px.is_some(), "room in the total: x's parked one gets in");
    assert_eq!(a.waiting(), (8, 1), "y's stays parked: y is at its share");
}

#[test]
fn beyond_the_total_the_oldest_of_all_is_closed() {
    let a = Admission::new(limits(10, 3, 10));
    let conns: Vec<_> = (0..3).map(|i| now(a.admit(ip(10 + i)))).collect();
    let newest = now(a.admit(ip(20)));
    assert!(conns[0].closed.is_cancelled());
    assert!(!conns[1].closed.is_cancelled() && !newest.closed.is_cancelled());
    assert_eq!(a.waiting(), (3, 0));
}

#[test]
fn a_connection_past_its_head_does_not_count_until_it_waits_again() {
    let a = Admission::new(limits(1, 10, 0));
    let busy = now(a.admit(ip(2)));
    busy.head_arrived();
    assert_eq!(a.waiting(), (0, 0));
    let idle = now(a.admit(ip(2)));
    assert!(
        !busy.closed.is_cancelled(),
        "a request in progress is never closed"
    );
    busy.start_waiting();
    assert!(idle.closed.is_cancelled(), "now the older waiting one goes");
    drop(busy);
    assert_eq!(a.waiting(), (0, 0), "a dropped connection leaves");
}

#[test]
fn an_ipv6_peer_counts_by_its_64_and_a_mapped_ipv4_as_itself() {
    let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
    let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
    let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
    assert_eq!(peer_key(a), peer_key(b));
    assert_ne!(peer_key(a), peer_key(c));
    let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
    assert_eq!(peer_key(mapped), IpAddr::from([192, 0, 2, 7]));
    assert_eq!(peer_key(ip(9)), ip(9));
}
