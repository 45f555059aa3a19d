//! Streaming results (B57): a streaming function's items reach the caller
//! in order, with back-pressure (the body pauses while the caller is a
//! window behind); dropping the stream cancels the work and its slot
//! returns when the work ends; an error or a panic mid-stream ends the
//! stream with it, after the items before; the deadline covers the whole
//! stream, and the wait for each item may be bounded.

use std::time::Duration;

use futures_util::StreamExt as _;
use ractor_flame::{ByteBuf, Error, StreamOptions};

use super::WAIT;
use crate::support::functions::{BlockingTicks, Chunks, Ticks, TicksArgs};
use crate::support::{self, Kind, busy, config, eventually, key, pool_with, probe};

pub(super) async fn b57_a_stream_yields_every_item_in_order_then_ends(kind: Kind) {
    let pool = pool_with(kind, config(1)).await;
    let k = key();
    let items: Vec<u32> = pool
        .stream::<Ticks>(TicksArgs::new(&k, 500))
        .map(|item| item.expect("an item"))
        .collect()
        .await;
    assert_eq!(items, (0..500).collect::<Vec<_>>());
    let counts = probe(&pool, &k).await;
    assert_eq!(
        (counts.sent, counts.completed, counts.dropped),
        (500, 1, 0),
        "{counts:?}"
    );
    busy(&pool, 0).await;

    // An empty stream ends at once; a stream that has ended stays ended.
    let mut empty = pool.stream::<Ticks>(TicksArgs::new(&key(), 0));
    assert!(empty.next().await.is_none());
    assert!(empty.next().await.is_none());
    pool.stop().await;
}

pub(super) async fn b57_a_slow_consumer_pauses_the_body_within_its_window(kind: Kind) {
    const WINDOW: u32 = 4;
    let pool = pool_with(kind, config(1)).await;
    let k = key();
    let mut stream = pool.stream_with::<Ticks>(TicksArgs::new(&k, 40), StreamOptions::new().window(WINDOW));
    let mut taken = 0;
    for _ in 0..3 {
        assert_eq!(stream.next().await.unwrap().unwrap(), taken);
        taken += 1;
        // The body runs ahead by its window, and no further: it waits for
        // credit. (The window is granted back half at a time, so it is
        // ahead by between half a window and a window.)
        eventually("the body runs ahead by its window", WAIT, || async {
            probe(&pool, &k).await.sent >= taken + WINDOW / 2
        })
        .await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        let sent = probe(&pool, &k).await.sent;
        assert!(
            sent <= taken + WINDOW,
            "{sent} items sent with {taken} taken and a window of {WINDOW}"
        );
    }
    let rest: Vec<u32> = stream.map(|item| item.unwrap()).collect().await;
    assert_eq!(rest, (taken..40).collect::<Vec<_>>());
    assert_eq!(probe(&pool, &k).await.completed, 1);
    pool.stop().await;
}

pub(super) async fn b57_dropping_the_stream_cancels_the_work_and_its_slot_returns(kind: Kind) {
    let pool = pool_with(kind, config(1)).await;
    for blocking in [false, true] {
        let k = key();
        let args = TicksArgs {
            ms: 5,
            ..TicksArgs::new(&k, 100_000)
        };
        // A budget far beyond the test's waits: only the drop can stop the
        // work in time.
        let opts = StreamOptions::new().timeout(Duration::from_secs(120));
        let mut stream = if blocking {
            // A CPU-bound body that never yields: it learns of the cancel
            // from its next send.
            pool.stream_with::<BlockingTicks>(args, opts)
        } else {
            pool.stream_with::<Ticks>(args, opts)
        };
        for i in 0..3 {
            assert_eq!(stream.next().await.unwrap().unwrap(), i);
        }
        support::busy(&pool, 1).await;
        drop(stream);
        eventually("the work stops", WAIT, || async { probe(&pool, &k).await.dropped == 1 }).await;
        busy(&pool, 0).await;
        let counts = probe(&pool, &k).await;
        assert_eq!(
            (counts.running, counts.completed),
            (0, 0),
            "blocking {blocking}: {counts:?}"
        );
        assert!(
            counts.sent < 100,
            "blocking {blocking}: the body went on after the drop: {counts:?}"
        );
    }
    pool.stop().await;
}

pub(super) async fn b57_an_error_or_a_panic_mid_stream_ends_it_after_the_items_before(kind: Kind) {
    let pool = pool_with(kind, config(1)).await;
    let failing = TicksArgs {
        fail_at: Some(3),
        ..TicksArgs::new(&key(), 10)
    };
    let panicking = TicksArgs {
        panic_at: Some(2),
        ..TicksArgs::new(&key(), 10)
    };
    for (args, before) in [(failing, 3), (panicking, 2)] {
        let mut stream = pool.stream::<Ticks>(args.clone());
        for i in 0..before {
            assert_eq!(stream.next().await.unwrap().unwrap(), i, "{args:?}");
        }
        match stream.next().await {
            Some(Err(Error::Remote { message, .. })) if args.fail_at.is_some() => {
                assert_eq!(message, "failed at item 3");
            }
            Some(Err(Error::Panic { message, .. })) if args.panic_at.is_some() => {
                assert!(message.contains("panicked at item 2"), "{message}");
            }
            other => panic!("{args:?}: {other:?}"),
        }
        assert!(stream.next().await.is_none(), "the error is the stream's last item");
    }
    busy(&pool, 0).await;
    pool.stop().await;
}

pub(super) async fn b57_the_deadline_covers_the_whole_stream_and_each_item_may_be_bounded(kind: Kind) {
    let pool = pool_with(kind, config(1)).await;
    // 20 ms an item, 400 ms for the whole stream: some items, then the
    // deadline.
    let k = key();
    let args = TicksArgs {
        ms: 20,
        ..TicksArgs::new(&k, 1_000)
    };
    let opts = StreamOptions::new().timeout(Duration::from_millis(400));
    let results: Vec<_> = pool.stream_with::<Ticks>(args, opts).collect().await;
    let (last, items) = results.split_last().expect("items, then the deadline");
    assert!(matches!(last, Err(Error::Deadline { .. })), "{last:?}");
    assert!((3..30).contains(&items.len()), "{} items in 400 ms", items.len());
    assert!(items.iter().all(Result::is_ok));
    eventually("the work stops", WAIT, || async { probe(&pool, &k).await.dropped == 1 }).await;

    // Each item within 100 ms: a body that takes 2 s for its first fails
    // the stream after 100 ms, and is cancelled.
    let k = key();
    let args = TicksArgs {
        ms: 2_000,
        ..TicksArgs::new(&k, 3)
    };
    let opts = StreamOptions::new().item_timeout(Duration::from_millis(100));
    let started = std::time::Instant::now();
    let mut stream = pool.stream_with::<Ticks>(args, opts);
    match stream.next().await {
        Some(Err(Error::Deadline { timeout, .. })) => assert_eq!(timeout, Duration::from_millis(100)),
        other => panic!("{other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_millis(1_500),
        "{:?}",
        started.elapsed()
    );
    assert!(stream.next().await.is_none());
    eventually("the work stops", WAIT, || async { probe(&pool, &k).await.dropped == 1 }).await;
    busy(&pool, 0).await;
    pool.stop().await;
}

pub(super) async fn b57_large_items_stream_intact(kind: Kind) {
    let pool = pool_with(kind, config(1)).await;
    let mut stream = pool.stream_with::<Chunks>((12, 1 << 20), StreamOptions::new().window(2));
    let mut n = 0;
    while let Some(item) = stream.next().await {
        let item: ByteBuf = item.unwrap();
        assert_eq!(item.len(), 1 << 20);
        assert!(item.iter().all(|b| *b == n as u8), "item {n}");
        n += 1;
    }
    assert_eq!(n, 12);
    pool.stop().await;

    // An item larger than a frame may be is never sent: the body learns of
    // it, and the stream ends with its error after the items before. (An
    // in-process runner's items are not framed: they have no such limit.)
    let pool = pool_with(kind, config(1).max_frame_size(1 << 20)).await;
    let mut stream = pool.stream::<Chunks>((3, 2 << 20));
    if kind == Kind::Local {
        assert_eq!(stream.count().await, 3);
        return pool.stop().await;
    }
    match stream.next().await {
        Some(Err(Error::Remote { message, .. })) => assert!(message.contains("exceeds max_frame_size"), "{message}"),
        other => panic!("{other:?}"),
    }
    assert!(stream.next().await.is_none());
    pool.stop().await;
}
