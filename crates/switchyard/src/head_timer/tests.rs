//! The clock's phases and deadlines, and [`Watched`] waking a connection at them, with a
//! stand-in for hyper that holds a head sleep as hyper does. The `408` and the idle close
//! through real hyper connections are tested in `tests/serve.rs`.

use super::*;

const IDLE_LIMIT: Duration = Duration::from_secs(5);
const HEAD_LIMIT: Duration = Duration::from_secs(1);

fn clock() -> Arc<Clock> {
    Arc::new(Clock::new(Some(IDLE_LIMIT), Some(HEAD_LIMIT)))
}

#[test]
fn instants_round_trip() {
    let at = Instant::now() + Duration::from_secs(5);
    let back = decode(encode(at)).unwrap();
    assert!(back.max(at) - back.min(at) < Duration::from_micros(1));
    assert_eq!(decode(0), None);
}

/// Bytes before hyper waits (version sniffing) make the head started; hyper's wait then
/// makes it a head; the head deadline is fixed once; hyper having the head ends both.
#[tokio::test(start_paused = true)]
async fn phases_follow_hyper_and_the_bytes() {
    let c = clock();
    let start = tokio::time::Instant::now().into_std();
    assert_eq!(c.phase(), FRESH);
    assert_eq!(c.deadline(), Some(start + IDLE_LIMIT));
    c.received();
    assert_eq!((c.phase(), c.deadline()), (STARTED, None));
    c.arm(start + IDLE_LIMIT);
    assert_eq!(c.phase(), HEAD);
    let head = c.deadline().unwrap();
    assert_eq!(head, start + HEAD_LIMIT);
    tokio::time::advance(Duration::from_millis(300)).await;
    assert_eq!(c.deadline(), Some(head), "fixed at the first byte");
    c.disarm();
    assert_eq!((c.phase(), c.deadline()), (BUSY, None));

    let next = tokio::time::Instant::now().into_std() + IDLE_LIMIT;
    c.arm(next);
    assert_eq!((c.phase(), c.deadline()), (IDLE, Some(next)));
    c.received();
    assert_eq!(c.phase(), HEAD);
    assert_eq!(
        c.deadline(),
        Some(tokio::time::Instant::now().into_std() + HEAD_LIMIT)
    );
}

/// Without a keep-alive timeout nothing closes an idle connection; without a head timeout
/// nothing limits a head.
#[tokio::test(start_paused = true)]
async fn limits_that_are_off_have_no_deadline() {
    let c = Clock::new(None, None);
    assert_eq!(c.deadline(), None);
    c.arm(Instant::now() + NO_IDLE_LIMIT);
    assert_eq!((c.phase(), c.deadline()), (IDLE, None));
    c.received();
    assert_eq!((c.phase(), c.deadline()), (HEAD, None));
}

/// Outside a `Watched` poll, the timer's sleeps are tokio's: they end on their own.
#[tokio::test(start_paused = true)]
async fn outside_a_watched_connection_sleeps_are_tokio_sleeps() {
    let started = tokio::time::Instant::now();
    HeadTimer.sleep(Duration::from_millis(20)).await;
    assert!(started.elapsed() >= Duration::from_millis(20));
}

/// A "connection" that, like hyper, holds one head sleep at a time, creating, polling and
/// dropping it inside its own poll: it gets `heads` heads, the `i`th after waiting
/// `gaps[i]`, then waits for one more and ends when its sleep is due (the idle close).
fn hyper_like(gaps: Vec<Duration>) -> impl Future<Output = usize> {
    let mut sleep: Option<Pin<Box<dyn Sleep>>> = None;
    let mut head: Option<Pin<Box<tokio::time::Sleep>>> = None;
    let mut served = 0;
    std::future::poll_fn(move |cx| {
        assert!(with_current(|_| ()).is_some(), "polled without its clock");
        loop {
            let waiting = sleep.get_or_insert_with(|| HeadTimer.sleep(IDLE_LIMIT));
            let Some(gap) = gaps.get(served) else {
                // No more heads: wait for the idle close.
                return match waiting.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(served),
                    Poll::Pending => Poll::Pending,
                };
            };
            // The next head arrives `gap` after the wait began (the stand-in for the IO).
            let arrival = head.get_or_insert_with(|| Box::pin(tokio::time::sleep(*gap)));
            if arrival.as_mut().poll(cx).is_pending() {
                return match waiting.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(served),
                    Poll::Pending => Poll::Pending,
                };
            }
            with_current(Clock::received);
            head = None;
            sleep = None;
            served += 1;
        }
    })
}

/// Heads that come in time keep the connection; once idle, its sleep is due when the
/// keep-alive timeout has passed, not before.
#[tokio::test(start_paused = true)]
async fn a_watched_connection_closes_when_idle_for_the_keep_alive_timeout() {
    let gaps = vec![Duration::from_secs(4); 3];
    let started = tokio::time::Instant::now();
    let served = tokio::time::timeout(
        Duration::from_secs(60),
        Watched::new(hyper_like(gaps), clock()),
    )
    .await
    .expect("never woken");
    assert_eq!(served, 3);
    let open_for = started.elapsed();
    let expected = Duration::from_secs(12) + IDLE_LIMIT;
    assert!(
        open_for >= expected && open_for < expected + Duration::from_millis(10),
        "closed after {open_for:?}"
    );
}

/// The same with tokio's own clock running.
#[tokio::test]
async fn a_watched_connection_follows_the_real_clock() {
    let short = Duration::from_millis(30);
    let c = Arc::new(Clock::new(Some(short), None));
    let conn = std::future::poll_fn({
        let mut sleep: Option<Pin<Box<dyn Sleep>>> = None;
        move |cx| {
            sleep
                .get_or_insert_with(|| HeadTimer.sleep(short))
                .as_mut()
                .poll(cx)
        }
    });
    let started = tokio::time::Instant::now();
    tokio::time::timeout(Duration::from_secs(10), Watched::new(conn, c))
        .await
        .expect("never woken");
    assert!(started.elapsed() >= short);
}
