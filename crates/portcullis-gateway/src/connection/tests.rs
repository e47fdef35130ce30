use std::time::Duration;

use axum::{Router, routing::get};
use futures_util::stream;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
    task::JoinSet,
};

use std::sync::atomic::AtomicBool;

use super::*;

/// A server of `router` on a free port, and the connection tasks it spawned.
struct Server {
    addr: SocketAddr,
    shared: Arc<Shared<Router>>,
    tasks: Arc<std::sync::Mutex<JoinSet<()>>>,
    /// Set when `/finished` finishes.
    finished: Arc<AtomicBool>,
}

impl Server {
    async fn start(client_timeout: Duration) -> Self {
        let finished = Arc::new(AtomicBool::new(false));
        let finishing = finished.clone();
        let router = Router::new()
            .route(
                "/",
                get(|| async { "hello" })
                    .post(|body: Bytes| async move { format!("{} bytes", body.len()) }),
            )
            .route(
                "/peer",
                get(|req: Request<Body>| async move {
                    let peer = req.extensions().get::<ConnectInfo<SocketAddr>>().unwrap();
                    let downstream = req.extensions().get::<Downstream>().is_some();
                    format!("{} {downstream}", peer.0.ip())
                }),
            )
            .route(
                "/stream",
                get(|| async {
                    let chunks =
                        ["one", "two", "three"].map(|c| Ok::<_, io::Error>(Bytes::from(c)));
                    Body::from_stream(stream::iter(chunks))
                }),
            )
            .route(
                "/fail",
                get(|| async {
                    let chunks = [Ok(Bytes::from("partial")), Err(io::Error::other("broken"))];
                    Body::from_stream(stream::iter(chunks))
                }),
            )
            .route(
                "/close",
                get(|| async { ([(header::CONNECTION, "close")], "bye") }),
            )
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    "slow"
                }),
            )
            .route(
                "/finished",
                get(move || {
                    let finished = finishing.clone();
                    async move {
                        tokio::time::sleep(Duration::from_millis(300)).await;
                        finished.store(true, Ordering::SeqCst);
                        "finished"
                    }
                }),
            );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared::new(router, client_timeout));
        let tasks = Arc::new(std::sync::Mutex::new(JoinSet::new()));
        let (accepting, spawning) = (shared.clone(), tasks.clone());
        tokio::spawn(async move {
            loop {
                let (io, peer) = listener.accept().await.unwrap();
                let task = run(io, peer, accepting.clone());
                spawning.lock().unwrap().spawn(task);
            }
        });
        Self {
            addr,
            shared,
            tasks,
            finished,
        }
    }

    async fn connect(&self) -> TcpStream {
        TcpStream::connect(self.addr).await.unwrap()
    }

    /// Whether every connection task ended within `within`.
    async fn drained(&self, within: Duration) -> bool {
        let mut tasks = std::mem::take(&mut *self.tasks.lock().unwrap());
        tokio::time::timeout(within, async { while tasks.join_next().await.is_some() {} })
            .await
            .is_ok()
    }
}

/// Read until `done` says what was read is complete, or the peer closes; within 5 s.
async fn read_until(io: &mut TcpStream, done: impl Fn(&str) -> bool) -> (String, bool) {
    let mut out = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if done(&String::from_utf8_lossy(&out)) {
                return false;
            }
            let mut buf = [0; 4096];
            match io.read(&mut buf).await {
                Ok(0) | Err(_) => return true,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .expect("answered within 5 s");
    (String::from_utf8_lossy(&out).into_owned(), closed)
}

/// Send `request`, then [`read_until`] `done`.
async fn exchange(
    io: &mut TcpStream,
    request: impl AsRef<[u8]>,
    done: impl Fn(&str) -> bool,
) -> (String, bool) {
    io.write_all(request.as_ref()).await.unwrap();
    read_until(io, done).await
}

fn responses(text: &str) -> usize {
    text.matches("HTTP/1.1 ").count()
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_on_one_connection() {
    let server = Server::start(Duration::from_secs(30)).await;
    let mut io = server.connect().await;
    let (text, closed) = exchange(
        &mut io,
        b"GET / HTTP/1.1\r\nhost: x\r\n\r\nGET /peer HTTP/1.1\r\nhost: x\r\n\r\n",
        |t| t.ends_with("127.0.0.1 true"),
    )
    .await;
    assert!(!closed);
    assert_eq!(responses(&text), 2, "{text}");
    let (first, second) = text.split_at(text.find("\r\n\r\n").unwrap() + 4);
    assert!(first.starts_with("HTTP/1.1 200 OK\r\n"), "{first}");
    assert!(first.contains("content-length: 5\r\n"), "{first}");
    assert!(first.contains("\r\ndate: "), "{first}");
    assert!(!first.contains("connection"), "{first}");
    assert!(second.starts_with("hello"), "{second}");
    assert!(second.ends_with("\r\n\r\n127.0.0.1 true"), "{second}");

    // The same connection goes on.
    let (text, closed) = exchange(&mut io, b"GET / HTTP/1.1\r\nhost: x\r\n\r\n", |t| {
        t.ends_with("hello")
    })
    .await;
    assert!(!closed && text.starts_with("HTTP/1.1 200 OK"), "{text}");
}

#[tokio::test]
async fn a_request_with_a_body_hands_the_rest_of_the_connection_to_hyper() {
    let server = Server::start(Duration::from_secs(30)).await;
    let mut io = server.connect().await;
    let (text, closed) = exchange(
        &mut io,
        b"GET / HTTP/1.1\r\nhost: x\r\n\r\n\
          POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n\r\nhello\
          POST / HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n\
          GET /peer HTTP/1.1\r\nhost: x\r\n\r\n",
        |t| t.ends_with("127.0.0.1 true"),
    )
    .await;
    assert!(!closed, "{text}");
    assert_eq!(responses(&text), 4, "{text}");
    let bodies: Vec<&str> = text
        .split("HTTP/1.1 ")
        .skip(1)
        .map(|r| r.split("\r\n\r\n").nth(1).unwrap())
        .collect();
    // Hyper's requests carry the same extensions.
    assert_eq!(bodies, ["hello", "5 bytes", "3 bytes", "127.0.0.1 true"]);
}

#[tokio::test]
async fn a_body_declared_any_way_is_never_read_as_the_next_request() {
    let server = Server::start(Duration::from_secs(30)).await;
    // A GET whose chunked body looks like a request: hyper reads it as the body.
    let mut io = server.connect().await;
    let smuggled = "GET /peer HTTP/1.1\r\nhost: x\r\n\r\n";
    let request = format!(
        "GET / HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{smuggled}\r\n0\r\n\r\n",
        smuggled.len()
    );
    let (text, _) = exchange(&mut io, request.as_bytes(), |t| t.ends_with("hello")).await;
    assert_eq!(responses(&text), 1, "{text}");
    assert!(!text.contains("127.0.0.1"), "{text}");
    // Any other length is hyper's to read.
    for length in ["5", "05"] {
        let mut io = server.connect().await;
        let request =
            format!("POST / HTTP/1.1\r\nhost: x\r\ncontent-length: {length}\r\n\r\nhello");
        let (text, _) = exchange(&mut io, request.as_bytes(), |t| t.ends_with("bytes")).await;
        assert!(text.ends_with("\r\n\r\n5 bytes"), "{length}: {text}");
    }
}

#[tokio::test]
async fn bodies_of_unknown_size_are_chunked_and_a_failing_one_is_cut_short() {
    let server = Server::start(Duration::from_secs(30)).await;
    let mut io = server.connect().await;
    let (text, closed) = exchange(&mut io, b"GET /stream HTTP/1.1\r\nhost: x\r\n\r\n", |t| {
        t.ends_with("0\r\n\r\n")
    })
    .await;
    assert!(!closed);
    assert!(text.contains("transfer-encoding: chunked\r\n"), "{text}");
    assert!(!text.contains("content-length"), "{text}");
    assert!(
        text.ends_with("\r\n\r\n3\r\none\r\n3\r\ntwo\r\n5\r\nthree\r\n0\r\n\r\n"),
        "{text}"
    );

    let (text, closed) =
        exchange(&mut io, b"GET /fail HTTP/1.1\r\nhost: x\r\n\r\n", |_| false).await;
    assert!(closed, "the connection ends");
    assert!(text.contains("7\r\npartial\r\n"), "{text}");
    assert!(!text.ends_with("0\r\n\r\n"), "never completed: {text}");
}

#[tokio::test]
async fn head_answers_carry_no_body() {
    let server = Server::start(Duration::from_secs(30)).await;
    let mut io = server.connect().await;
    let (text, _) = exchange(
        &mut io,
        b"HEAD / HTTP/1.1\r\nhost: x\r\n\r\nGET / HTTP/1.1\r\nhost: x\r\n\r\n",
        |t| t.ends_with("hello"),
    )
    .await;
    let (first, second) = text.split_at(text.find("\r\n\r\n").unwrap() + 4);
    assert!(first.starts_with("HTTP/1.1 200 OK"), "{first}");
    assert!(
        second.starts_with("HTTP/1.1 200 OK"),
        "no body before it: {text}"
    );
}

#[tokio::test]
async fn connection_close_from_either_side_closes_after_the_answer() {
    let server = Server::start(Duration::from_secs(30)).await;
    let mut io = server.connect().await;
    let (text, closed) = exchange(
        &mut io,
        b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        |_| false,
    )
    .await;
    assert!(closed);
    assert!(text.contains("connection: close\r\n"), "{text}");
    assert!(text.ends_with("hello"), "{text}");

    let mut io = server.connect().await;
    let (text, closed) = exchange(
        &mut io,
        b"GET /close HTTP/1.1\r\nhost: x\r\n\r\nGET / HTTP/1.1\r\nhost: x\r\n\r\n",
        |_| false,
    )
    .await;
    assert!(closed);
    assert_eq!(responses(&text), 1, "{text}");
    assert!(text.ends_with("bye"), "{text}");
}

#[tokio::test]
async fn what_is_not_served_here_is_served_by_hyper() {
    let server = Server::start(Duration::from_secs(30)).await;
    // Malformed: hyper's 400.
    let mut io = server.connect().await;
    let (text, _) = exchange(&mut io, b"GET / HTTP/1.1\r\nbad header: x\r\n\r\n", |t| {
        t.contains("\r\n\r\n")
    })
    .await;
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");

    // HTTP/1.0, an absolute-form target, a head above 16 KiB, more than 32 header lines.
    let big = "a".repeat(20 * 1024);
    let many: String = (0..40).map(|i| format!("x-h{i}: v\r\n")).collect();
    for request in [
        "GET / HTTP/1.0\r\n\r\n".to_owned(),
        format!("GET http://{}/ HTTP/1.1\r\nhost: x\r\n\r\n", server.addr),
        format!("GET / HTTP/1.1\r\nhost: x\r\nx-big: {big}\r\n\r\n"),
        format!("GET / HTTP/1.1\r\nhost: x\r\n{many}\r\n"),
    ] {
        let mut io = server.connect().await;
        let (text, _) = exchange(&mut io, request.as_bytes(), |t| t.ends_with("hello")).await;
        assert!(text.contains(" 200 OK\r\n"), "{text}");
    }

    assert_eq!(
        h2_get(&h2_client(), &server, "/peer").await,
        "127.0.0.1 true"
    );
}

/// An HTTP/2 client (prior knowledge): one connection, kept while the client lives.
type H2Client =
    hyper_util::client::legacy::Client<hyper_util::client::legacy::connect::HttpConnector, Body>;

fn h2_client() -> H2Client {
    hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

/// The body of `client`'s GET of `path`, over HTTP/2.
async fn h2_get(client: &H2Client, server: &Server, path: &str) -> Bytes {
    let uri: Uri = format!("http://{}{path}", server.addr).parse().unwrap();
    let res = client.get(uri).await.unwrap();
    assert_eq!(res.version(), Version::HTTP_2);
    http_body_util::BodyExt::collect(res.into_body())
        .await
        .unwrap()
        .to_bytes()
}

#[tokio::test]
async fn an_idle_http2_connection_is_closed_after_the_client_timeout() {
    let server = Server::start(Duration::from_millis(200)).await;
    // A request in flight for longer than the timeout is not cut short...
    let client = h2_client();
    assert_eq!(h2_get(&client, &server, "/slow").await, "slow");
    // ...and the connection, idle since, is closed a timeout later.
    let started = std::time::Instant::now();
    assert!(server.drained(Duration::from_secs(2)).await);
    let closed = started.elapsed();
    assert!(
        closed >= Duration::from_millis(150),
        "closed {closed:?} after the answer"
    );
}

#[tokio::test]
async fn stopping_closes_idle_connections_and_finishes_busy_ones() {
    let server = Server::start(Duration::from_secs(30)).await;
    let mut idle = server.connect().await;
    exchange(&mut idle, b"GET / HTTP/1.1\r\nhost: x\r\n\r\n", |t| {
        t.ends_with("hello")
    })
    .await;
    let mut busy = server.connect().await;
    busy.write_all(b"GET /slow HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    // A connection hyper serves, idle too.
    let mut handed = server.connect().await;
    exchange(
        &mut handed,
        b"GET / HTTP/1.0\r\nconnection: keep-alive\r\n\r\n",
        |t| t.ends_with("hello"),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(50)).await;

    server.shared.stop();
    let (text, closed) = read_until(&mut idle, |_| false).await;
    assert!(closed && text.is_empty(), "{text}");
    let (text, closed) = read_until(&mut handed, |_| false).await;
    assert!(closed && text.is_empty(), "{text}");
    let (text, closed) = read_until(&mut busy, |_| false).await;
    assert!(closed);
    assert!(text.contains("connection: close\r\n"), "{text}");
    assert!(text.ends_with("slow"), "{text}");
    assert!(server.drained(Duration::from_secs(2)).await);
}

#[tokio::test]
async fn slow_and_idle_connections_are_closed_after_the_client_timeout() {
    let timeout = Duration::from_millis(400);
    let server = Server::start(timeout).await;
    // A head that never ends.
    let mut io = server.connect().await;
    let started = std::time::Instant::now();
    let (_, closed) = exchange(&mut io, b"GET / HTTP/1.1\r\n", |_| false).await;
    assert!(
        closed && started.elapsed() >= timeout,
        "{:?}",
        started.elapsed()
    );

    // The connection's timer, set when it opened, fires during the second wait, which started
    // later: it waits on until its own deadline.
    let mut io = server.connect().await;
    let started = std::time::Instant::now();
    exchange(&mut io, b"GET / HTTP/1.1\r\nhost: x\r\n\r\n", |t| {
        t.ends_with("hello")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(250)).await;
    let (text, _) = exchange(&mut io, b"GET / HTTP/1.1\r\nhost: x\r\n\r\n", |t| {
        t.ends_with("hello")
    })
    .await;
    let second = std::time::Instant::now();
    assert_eq!(responses(&text), 1);
    let (_, closed) = read_until(&mut io, |_| false).await;
    assert!(closed);
    assert!(
        second.elapsed() >= timeout,
        "closed {:?} after the second answer",
        second.elapsed()
    );
    assert!(started.elapsed() >= timeout + Duration::from_millis(250));
}

#[tokio::test]
async fn a_client_that_leaves_cancels_its_request() {
    let server = Server::start(Duration::from_secs(30)).await;
    let mut io = server.connect().await;
    io.write_all(b"GET /finished HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    drop(io);
    assert!(
        server.drained(Duration::from_millis(200)).await,
        "ended at once"
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        !server.finished.load(Ordering::SeqCst),
        "the request was dropped"
    );

    // A pipelined request does not cancel the one before it.
    let mut io = server.connect().await;
    io.write_all(b"GET /finished HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (text, _) = exchange(&mut io, b"GET / HTTP/1.1\r\nhost: x\r\n\r\n", |t| {
        t.ends_with("hello")
    })
    .await;
    assert!(
        text.contains("finished") && server.finished.load(Ordering::SeqCst),
        "{text}"
    );
}
