//! Tests of `connection`, against a fake server on the other end of a socket pair.

use std::sync::atomic::AtomicBool;

use tokio::net::UnixStream;

use super::*;

const T: Duration = Duration::from_secs(10);

async fn next_message(s: &mut UnixStream, dec: &mut FrameDecoder) -> Message {
    loop {
        if let Some(m) = dec.next_message().unwrap() {
            return m;
        }
        let n = tokio::time::timeout(T, s.read_buf(dec.buffer()))
            .await
            .expect("nothing from the client")
            .unwrap();
        assert!(n > 0, "the client closed the connection");
    }
}

/// The reader is biased toward reading: when the runtime was too busy to run it until
/// after the probe's deadline, bytes that arrived meanwhile (the probe's reply) still count
/// as activity, never as a probe timeout. Repeated: an unbiased `select!` picks either
/// branch at random.
#[tokio::test(flavor = "current_thread")]
async fn a_reply_that_arrived_while_the_runtime_was_busy_is_not_a_probe_timeout() {
    for round in 0..20 {
        let (ours, mut server) = UnixStream::pair().unwrap();
        let (seen, mut notified) = mpsc::unbounded_channel();
        let handler: NotificationHandler = Box::new(move |_, _| {
            let _ = seen.send(());
            Ok(())
        });
        let cfg = ConnectionConfig {
            probe_interval: Some(Duration::from_millis(50)),
            max_message_len: 1 << 20,
            max_silence: T,
        };
        let (conn, task) = Connection::start(Stream::Unix(ours), cfg, handler);
        let mut dec = FrameDecoder::new(1 << 20);
        match next_message(&mut server, &mut dec).await {
            Message::Request { method, .. } => assert_eq!(method, "echo"),
            m => panic!("{m:?}"),
        }
        server
            .write_all(
                br#"{"id":"echo","result":[],"error":null}{"method":"n","params":[],"id":null}"#,
            )
            .await
            .unwrap();
        // The only runtime thread is busy past the probe's deadline: when the reader runs
        // again, the reply is there and the deadline has passed.
        std::thread::sleep(Duration::from_millis(150));
        // Either the notification behind the reply is handled, or the probe times out
        // (and closes the connection): one of them happens, no wait needs a bound.
        tokio::select! {
            biased;
            _ = conn.closed() => panic!("round {round}: probe timeout with the reply already arrived"),
            _ = notified.recv() => {}
        }
        conn.close("done");
        let _ = task.await;
    }
}

/// While a reply the server prepares in silence is outstanding (a monitor's initial dump:
/// `ovsdb-server` reads nothing until it has sent it), unanswered probes do not end the
/// connection; without one, the probe still does. The server stays silent for three probe
/// intervals (it counts the probes: one per interval), twice what a probe allows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_silent_while_preparing_a_patient_reply_is_not_a_probe_timeout() {
    let cfg = ConnectionConfig {
        probe_interval: Some(Duration::from_millis(20)),
        max_message_len: 1 << 20,
        max_silence: T,
    };
    let (ours, mut server) = UnixStream::pair().unwrap();
    let (conn, task) = Connection::start(Stream::Unix(ours), cfg.clone(), Box::new(|_, _| Ok(())));
    let reply = conn.send_patient("monitor_cond", json!([]), None).unwrap();
    let mut dec = FrameDecoder::new(1 << 20);
    let (mut id, mut probes) = (None, 0);
    while probes < 3 {
        match next_message(&mut server, &mut dec).await {
            Message::Request { method, id: i, .. } if method == "monitor_cond" => id = Some(i),
            Message::Request { method, .. } if method == "echo" => probes += 1,
            m => panic!("{m:?}"),
        }
    }
    let out = encode(&Message::Response {
        id: id.unwrap(),
        result: json!({}),
        error: Value::Null,
    });
    server.write_all(&out).await.unwrap();
    let r = tokio::time::timeout(T, reply).await.unwrap().unwrap();
    assert!(r.is_ok(), "{r:?}");
    conn.close("done");
    let _ = task.await;

    // Not patient: the same silence ends the connection on the probe.
    let (ours, _server) = UnixStream::pair().unwrap();
    let (conn, task) = Connection::start(Stream::Unix(ours), cfg.clone(), Box::new(|_, _| Ok(())));
    let reply = conn.send("transact", json!([]), None).unwrap();
    let r = tokio::time::timeout(T, reply).await.unwrap().unwrap();
    assert!(matches!(r, Err(CallError::Closed(_))), "{r:?}");
    let end = tokio::time::timeout(T, task).await.unwrap().unwrap();
    assert!(matches!(end, Error::ProbeTimeout(_)), "{end:?}");

    // Patient, but its caller gave up (dropped the receiver): the probe applies again.
    let (ours, _server) = UnixStream::pair().unwrap();
    let (_conn, task) = Connection::start(Stream::Unix(ours), cfg, Box::new(|_, _| Ok(())));
    drop(_conn.send_patient("transact", json!([]), None).unwrap());
    let end = tokio::time::timeout(T, task).await.unwrap().unwrap();
    assert!(matches!(end, Error::ProbeTimeout(_)), "{end:?}");
}

/// A server that stops answering ends the session once its silence passes `max_silence`,
/// even while patient requests wait: here a caller retries with a new patient request
/// after every probe (as the reconciler does after a patient transaction's timeout).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_server_ends_the_session_however_many_patient_retries() {
    let cfg = ConnectionConfig {
        probe_interval: Some(Duration::from_millis(20)),
        max_message_len: 1 << 20,
        max_silence: Duration::from_millis(200),
    };
    let (ours, mut server) = UnixStream::pair().unwrap();
    let (conn, task) = Connection::start(Stream::Unix(ours), cfg, Box::new(|_, _| Ok(())));
    let mut _waiting = conn.send_patient("transact", json!([]), None).unwrap();
    let mut dec = FrameDecoder::new(1 << 20);
    let mut probes = 0;
    loop {
        while let Some(m) = dec.next_message().unwrap() {
            if matches!(&m, Message::Request { method, .. } if method == "echo") {
                probes += 1;
                // 40 probe intervals: 4 times the silence allowed.
                assert!(probes < 40, "the session outlived its silence limit");
                if let Ok(rx) = conn.send_patient("transact", json!([]), None) {
                    _waiting = rx;
                }
            }
        }
        let n = tokio::time::timeout(T, server.read_buf(dec.buffer()))
            .await
            .expect("nothing from the client")
            .unwrap();
        if n == 0 {
            break;
        }
    }
    let end = tokio::time::timeout(T, task).await.unwrap().unwrap();
    assert!(matches!(end, Error::ProbeTimeout(_)), "{end:?}");
}

/// `while_alive` bounds silence, not the total: a reply that streams in slowly for longer
/// than the limit completes; with nothing received, the limit ends the wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_alive_bounds_silence_not_the_total() {
    let cfg = ConnectionConfig {
        probe_interval: None,
        max_message_len: 1 << 20,
        max_silence: T,
    };
    let (ours, mut server) = UnixStream::pair().unwrap();
    let (conn, task) = Connection::start(Stream::Unix(ours), cfg, Box::new(|_, _| Ok(())));
    let limit = Duration::from_millis(600);
    let reply = conn.send_patient("monitor_cond", json!([]), None).unwrap();
    let out =
        br#"{"id":1,"result":{"pad":"0123456789012345678901234567890123456789"},"error":null}"#;
    let streamer = tokio::spawn(async move {
        // 20 pieces 60 ms apart: twice the limit in total, a tenth of it between bytes.
        for piece in out.chunks(out.len().div_ceil(20)) {
            tokio::time::sleep(Duration::from_millis(60)).await;
            server.write_all(piece).await.unwrap();
        }
        server
    });
    let r = conn.while_alive(limit, reply).await;
    assert!(matches!(r, Ok(Ok(Ok(_)))), "{r:?}");
    let _server = streamer.await.unwrap();
    let silent = conn.while_alive(limit, std::future::pending::<()>()).await;
    assert!(matches!(silent, Err(d) if d >= limit), "{silent:?}");
    conn.close("done");
    let _ = task.await;
}

/// A large update is handled off the reader task: while its handler is still busy, the
/// server's echo is answered, and the reply that came after the update waits for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_is_answered_while_a_large_update_is_handled_and_order_is_kept() {
    let (ours, mut server) = UnixStream::pair().unwrap();
    let (release, released) = std::sync::mpsc::channel::<()>();
    let handled = Arc::new(AtomicBool::new(false));
    let h = handled.clone();
    let handler: NotificationHandler = Box::new(move |method, _| {
        assert_eq!(method, "update");
        // Busy until the test says so (a long apply), or for `T`: against a reader that
        // waits for its handler, the test then fails on the order, instead of hanging.
        let _ = released.recv_timeout(T);
        h.store(true, Ordering::SeqCst);
        Ok(())
    });
    let cfg = ConnectionConfig {
        probe_interval: None,
        max_message_len: 1 << 24,
        max_silence: T,
    };
    let (conn, task) = Connection::start(Stream::Unix(ours), cfg, handler);
    let mut reply = conn.send("transact", json!(["db"]), None).unwrap();
    let big = json!({"method": "update", "id": null,
        "params": [null, {"pad": "x".repeat(4 * OFFLOAD_BYTES)}]});
    let mut out = serde_json::to_vec(&big).unwrap();
    out.extend(br#"{"id":1,"result":[],"error":null}"#);
    out.extend(br#"{"method":"echo","params":["alive?"],"id":"e1"}"#);
    server.write_all(&out).await.unwrap();

    let mut dec = FrameDecoder::new(1 << 24);
    loop {
        match next_message(&mut server, &mut dec).await {
            Message::Response { id, result, .. } if id == json!("e1") => {
                assert_eq!(result, json!(["alive?"]));
                break;
            }
            _ => {} // the client's own request
        }
    }
    assert!(
        !handled.load(Ordering::SeqCst),
        "echo answered only after the update"
    );
    assert!(
        reply.try_recv().is_err(),
        "a reply overtook the update before it"
    );
    release.send(()).unwrap();
    let r = tokio::time::timeout(T, &mut reply).await.unwrap().unwrap();
    assert!(r.is_ok(), "{r:?}");
    assert!(handled.load(Ordering::SeqCst));
    conn.close("done");
    tokio::time::timeout(T, task).await.unwrap().unwrap();
}

/// A large message's handler that panics ends the connection with `HandlerPanicked`, not
/// an ordinary close: the reconnect loop must not resume after the same txn id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_large_handler_ends_the_connection_as_a_panic() {
    let (ours, mut server) = UnixStream::pair().unwrap();
    let handler: NotificationHandler = Box::new(|_, _| panic!("injected"));
    let cfg = ConnectionConfig {
        probe_interval: None,
        max_message_len: 1 << 24,
        max_silence: T,
    };
    let (_conn, task) = Connection::start(Stream::Unix(ours), cfg, handler);
    let big = json!({"method": "update", "id": null,
        "params": [null, {"pad": "x".repeat(2 * OFFLOAD_BYTES)}]});
    server
        .write_all(&serde_json::to_vec(&big).unwrap())
        .await
        .unwrap();
    let err = tokio::time::timeout(T, task).await.unwrap().unwrap();
    assert!(matches!(err, Error::HandlerPanicked(_)), "{err:?}");
}
