//! The web pages in a real browser: headless Chromium driven through chromedriver
//! (WebDriver, with fantoccini) against a real three-node cluster and the api on port 0,
//! as a customer and an SRE see them. Checks the whole booking flow (sign up, find a
//! show, select seats with mouse and keyboard, hold, countdown, pay, booking code,
//! cancel), two browsers competing for one seat, a hold that expires, and the live
//! cluster page; saves a screenshot of the seat map under the target directory.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`scripts/setup-browser.sh`); without
//! them every test fails and says so. chromedriver is started per test on a free
//! loopback port and killed, with the browsers it started, when the test ends.

use api::app::AppState;
use api::auth::Keys;
use api::demo::DemoCluster;
use fantoccini::{Client, ClientBuilder, Locator};
use raft_node::config::RaftTiming;
use serde_json::{json, Value};
use state_machine::{Limits, Role, UserId};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Longest wait for anything a page should show.
const WAIT: Duration = Duration::from_secs(10);
/// How quickly another browser's lock must appear on a seat map (the page polls every
/// 500 ms; the issue asks for "within a second", plus slack for a loaded machine).
const LIVE_REFRESH_MAX: Duration = Duration::from_millis(2_000);

// ----- chromedriver --------------------------------------------------------------------

fn on_path(binary: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(binary))
        .find(|candidate| candidate.is_file())
}

/// Both binaries, or a failure that names the script installing them.
fn browser_binaries() -> (PathBuf, PathBuf) {
    let chromium = on_path("chromium").or_else(|| on_path("chromium-browser"));
    let driver = on_path("chromedriver");
    match (chromium, driver) {
        (Some(chromium), Some(driver)) => (chromium, driver),
        (chromium, driver) => panic!(
            "the browser tests need headless Chromium and chromedriver (found chromium: {}, \
             chromedriver: {}); run scripts/setup-browser.sh to install Debian's chromium and \
             chromium-driver",
            chromium.is_some(),
            driver.is_some()
        ),
    }
}

/// A chromedriver process in its own process group; dropping it kills the group, so
/// browsers it started die with it even when a test fails half way.
struct Chromedriver {
    child: Child,
    url: String,
    chromium: PathBuf,
}

impl Chromedriver {
    async fn start() -> Chromedriver {
        let (chromium, driver) = browser_binaries();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free loopback port")
            .port();
        let mut command = Command::new(&driver);
        command
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", driver.display()));
        let driver = Chromedriver {
            child,
            url: format!("http://127.0.0.1:{port}"),
            chromium,
        };
        let http = reqwest::Client::new();
        let deadline = Instant::now() + WAIT;
        loop {
            let ready = http
                .get(format!("{}/status", driver.url))
                .timeout(Duration::from_secs(1))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                return driver;
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not answer on {} within {WAIT:?}",
                driver.url
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A new headless browser session.
    async fn browser(&self) -> Client {
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": self.chromium,
                "args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                         "--disable-gpu", "--window-size=1280,1100", "--lang=en-US",
                         "--no-first-run", "--disable-extensions",
                         "--disable-crash-reporter", "--disable-breakpad"],
            }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        ClientBuilder::new(connector)
            .capabilities(capabilities)
            .connect(&self.url)
            .await
            .unwrap_or_else(|e| panic!("cannot open a Chromium session through chromedriver: {e}"))
    }
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        // The whole process group: chromedriver and the browsers it started.
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill")
            .args(["-KILL", "--", &group])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ----- the site under test -------------------------------------------------------------

struct Site {
    cluster: DemoCluster,
    base: String,
    keys: Keys,
    http: reqwest::Client,
    server: tokio::task::JoinHandle<()>,
}

impl Site {
    async fn start(limits: Limits) -> Site {
        let timing = RaftTiming {
            heartbeat_ms: 50,
            election_timeout_min_ms: 300,
            election_timeout_max_ms: 600,
            log_wal_prefill_mib: 1,
            ..RaftTiming::default()
        };
        let cluster = DemoCluster::start_with_limits(None, timing, limits)
            .await
            .expect("cluster");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (keys, _, _) = Keys::generate("seat-ledger", "seat-ledger-clients").unwrap();
        let mut config = cluster.api_config(&addr);
        config.limits.requests_per_second = 1_000;
        config.limits.burst = 1_000;
        let gateway = Arc::new(api::payment::SandboxGateway::start().await.unwrap());
        let state = Arc::new(AppState::new(config, keys.clone(), gateway).unwrap());
        let server = tokio::spawn(async move {
            api::serve(listener, state, std::future::pending())
                .await
                .unwrap();
        });
        Site {
            cluster,
            base: format!("http://{addr}"),
            keys,
            http: reqwest::Client::new(),
            server,
        }
    }

    fn token(&self, user: u64, role: Role) -> String {
        self.keys
            .issue_access(UserId(user), role, api::auth::now_s())
            .unwrap()
    }

    async fn call(&self, method: &str, path: &str, token: &str, body: Option<Value>) -> Value {
        let url = format!("{}{path}", self.base);
        let mut request = match method {
            "POST" => self.http.post(url),
            _ => self.http.get(url),
        };
        request = request.bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request");
        let status = response.status();
        let value: Value = response.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "{method} {path}: {status} {value}");
        value
    }

    /// A show in Mumbai with a unique title, `rows` rows of `seats` seats (the last row
    /// VIP, the one before premium).
    async fn show(&self, title: &str, rows: u16, seats: u16) -> String {
        let admin = self.token(900_000, Role::Admin);
        let layout: Vec<Value> = (0..rows)
            .map(|r| {
                let category = match rows - r {
                    1 => "vip",
                    2 => "premium",
                    _ => "normal",
                };
                json!({ "label": char::from(b'A' + r as u8).to_string(), "seats": seats,
                        "category": category })
            })
            .collect();
        let theater = json!({
            "city": "mumbai", "name": format!("{title} Talkies"), "address": "Juhu",
            "lat": 19.1, "long": 72.8, "screens": [{ "name": "One", "rows": layout }],
        });
        let theater = self
            .call("POST", "/api/v1/theaters", &admin, Some(theater))
            .await;
        let start_ms = (api::auth::now_s() + 2 * 86_400) * 1_000;
        let show = json!({
            "theater_id": theater["id"], "screen": 0, "title": title, "genre": "drama",
            "start_time": api::views::rfc3339(start_ms),
            "end_time": api::views::rfc3339(start_ms + 3 * 3_600_000),
            "prices": { "normal_minor": 20_000, "premium_minor": 35_000, "vip_minor": 60_000 },
        });
        let show = self.call("POST", "/api/v1/shows", &admin, Some(show)).await;
        show["id"].as_str().unwrap().to_owned()
    }

    async fn account(&self, email: &str, password: &str, role: Role) {
        let phone = format!("+91{:010}", fastrand::u64(..10_000_000_000));
        api::demo::create_account(&self.cluster.client(), email, &phone, password, role)
            .await
            .expect("account");
    }

    async fn seat_status(&self, show: &str, seat: u32) -> String {
        let admin = self.token(900_000, Role::Admin);
        let path = format!("/api/v1/shows/{show}/seats?consistency=linearizable");
        let map = self.call("GET", &path, &admin, None).await;
        map["seats"][seat as usize]["status"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    async fn stop(self) {
        self.server.abort();
        self.cluster.stop().await;
    }
}

// ----- page helpers --------------------------------------------------------------------

/// Evaluates `script` (a function body returning a value) until `done` accepts its
/// result; fails with `what` after `within`.
async fn wait_for(
    browser: &Client,
    what: &str,
    within: Duration,
    script: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + within;
    let mut last = Value::Null;
    while Instant::now() < deadline {
        match browser.execute(script, vec![]).await {
            Ok(value) if done(&value) => return value,
            Ok(value) => last = value,
            Err(e) => last = json!(e.to_string()),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let message = text(browser, "#seat-message").await;
    panic!("waited {within:?} for {what}; last value {last}; page message {message:?}");
}

async fn text(browser: &Client, css: &str) -> String {
    let script = format!(
        "const e = document.querySelector({}); return e ? e.textContent.trim() : null;",
        json!(css)
    );
    browser
        .execute(&script, vec![])
        .await
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

async fn visible(browser: &Client, css: &str) -> bool {
    let script = format!(
        "const e = document.querySelector({}); return Boolean(e && !e.closest('[hidden]'));",
        json!(css)
    );
    browser.execute(&script, vec![]).await.ok() == Some(json!(true))
}

async fn click(browser: &Client, css: &str) {
    browser
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no {css}: {e}"))
        .click()
        .await
        .unwrap_or_else(|e| panic!("cannot click {css}: {e}"));
}

async fn fill(browser: &Client, css: &str, value: &str) {
    let field = browser
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no {css}: {e}"));
    field.clear().await.unwrap();
    field.send_keys(value).await.unwrap();
}

fn seat(id: u32) -> String {
    format!("#seatmap button[data-seat-id='{id}']")
}

async fn seat_attr(browser: &Client, id: u32, attribute: &str) -> String {
    let script = format!(
        "const e = document.querySelector({}); return e ? e.getAttribute({}) : null;",
        json!(seat(id)),
        json!(attribute)
    );
    browser
        .execute(&script, vec![])
        .await
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

async fn open_home(browser: &Client, site: &Site) {
    browser.goto(&format!("{}/", site.base)).await.unwrap();
    wait_for(
        browser,
        "the page to load cities and shows",
        WAIT,
        "return document.body.dataset.ready === 'true';",
        |v| v == &json!(true),
    )
    .await;
}

async fn log_in(browser: &Client, email: &str, password: &str) {
    fill(browser, "#login-form input[name=email]", email).await;
    fill(browser, "#login-form input[name=password]", password).await;
    click(browser, "#login-submit").await;
    wait_for(
        browser,
        "the signed-in bar",
        WAIT,
        "return document.getElementById('account-who').textContent;",
        |v| v.as_str().is_some_and(|t| t.contains(email)),
    )
    .await;
}

/// Searches Mumbai's shows for `title` and opens the one show found.
async fn open_show(browser: &Client, title: &str, seats: usize) {
    browser
        .find(Locator::Css("#city"))
        .await
        .unwrap()
        .select_by_value("mumbai")
        .await
        .unwrap();
    fill(browser, "#search", title).await;
    click(browser, "#find-form button[type=submit]").await;
    wait_for(
        browser,
        "the show in the list",
        WAIT,
        "const list = document.getElementById('show-list'); \
         return list.getAttribute('aria-busy') === 'false' \
           && list.querySelectorAll('button.show').length;",
        |v| v == &json!(1),
    )
    .await;
    click(browser, "#show-list button.show").await;
    let script = "return document.querySelectorAll('#seatmap button.seat[data-status]').length;";
    wait_for(browser, "the seat map", WAIT, script, |v| {
        v == &json!(seats)
    })
    .await;
}

/// Sets the date picker the way a user's choice does (value, then a change event).
async fn set_date(browser: &Client, date: &str) {
    let script = "const d = document.getElementById('date'); d.value = arguments[0]; \
                  d.dispatchEvent(new Event('change'));";
    browser.execute(script, vec![json!(date)]).await.unwrap();
}

async fn show_start_ms(site: &Site, show: &str) -> u64 {
    let admin = site.token(900_000, Role::Admin);
    let item = site
        .call("GET", &format!("/api/v1/shows/{show}"), &admin, None)
        .await;
    api::views::parse_rfc3339(item["start_time"].as_str().unwrap()).unwrap()
}

/// The target directory of this build (the test binary is in `<target>/<profile>/deps`).
fn artifacts_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let target = exe
        .ancestors()
        .nth(3)
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    target.join("browser-artifacts")
}

// ----- tests ---------------------------------------------------------------------------

/// A new customer signs up, finds a show, reads the seat map (accessible names,
/// categories, prices, legend), selects one seat with the keyboard and one with the
/// mouse, holds them and sees the countdown, pays, gets a booking code, finds it under
/// "My bookings" and cancels it; the ledger agrees at each step.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_customer_signs_up_books_pays_and_cancels() {
    let driver = Chromedriver::start().await;
    let site = Site::start(Limits::default()).await;
    let title = format!("Premiere {}", fastrand::u32(1_000..9_999));
    let show = site.show(&title, 4, 8).await;
    let browser = driver.browser().await;
    open_home(&browser, &site).await;

    // Sign up through the form.
    let email = format!("fan{}@example.test", fastrand::u32(..));
    click(&browser, "#account-forms summary").await;
    fill(&browser, "#signup-form input[name=name]", "Film Fan").await;
    fill(&browser, "#signup-form input[name=email]", &email).await;
    fill(&browser, "#signup-form input[name=phone]", "+919876543210").await;
    fill(
        &browser,
        "#signup-form input[name=password]",
        "correct horse battery",
    )
    .await;
    click(&browser, "#signup-submit").await;
    let script = "return document.getElementById('account-who').textContent;";
    wait_for(&browser, "the signed-in bar", WAIT, script, |v| {
        v.as_str().is_some_and(|t| t.contains(&email))
    })
    .await;

    // The date picker: the day before the show lists nothing, the show's day lists it.
    let start_ms = show_start_ms(&site, &show).await;
    set_date(&browser, &api::views::rfc3339(start_ms - 86_400_000)[..10]).await;
    fill(&browser, "#search", &title).await;
    click(&browser, "#find-form button[type=submit]").await;
    let script = "const list = document.getElementById('show-list'); \
        return list.getAttribute('aria-busy') === 'false' \
          && document.getElementById('show-count').textContent;";
    wait_for(&browser, "no show the day before", WAIT, script, |v| {
        v.as_str().is_some_and(|t| t.starts_with("No shows match"))
    })
    .await;
    set_date(&browser, &api::views::rfc3339(start_ms)[..10]).await;
    open_show(&browser, &title, 32).await;
    let all = "return [...document.querySelectorAll('#seatmap button.seat')]\
        .every(b => b.getAttribute('aria-label').startsWith('Row '));";
    assert_eq!(browser.execute(all, vec![]).await.unwrap(), json!(true));
    // Every seat is a button with a spoken name: row, number, category, price, status.
    assert_eq!(
        seat_attr(&browser, 0, "aria-label").await,
        "Row A seat 1, normal, ₹200.00, available"
    );
    assert_eq!(
        seat_attr(&browser, 31, "aria-label").await,
        "Row D seat 8, vip, ₹600.00, available"
    );
    assert!(seat_attr(&browser, 20, "class")
        .await
        .contains("cat-premium"));
    let legend = text(&browser, "#legend").await;
    for entry in [
        "Normal ₹200.00",
        "Premium ₹350.00",
        "VIP ₹600.00",
        "Sold",
        "Held by someone else",
    ] {
        assert!(legend.contains(entry), "legend {legend:?} lacks {entry:?}");
    }
    let rows = browser
        .execute("return [...document.querySelectorAll('#seatmap .seat-row')].map(r => r.getAttribute('aria-label'));", vec![])
        .await
        .unwrap();
    assert_eq!(rows, json!(["Row A", "Row B", "Row C", "Row D"]));

    // Keyboard: focus seat A1, arrow right to A2, arrow down to B2, Enter selects it.
    let first = browser.find(Locator::Css(&seat(0))).await.unwrap();
    browser
        .execute(
            "document.querySelector(arguments[0]).focus();",
            vec![json!(seat(0))],
        )
        .await
        .unwrap();
    first.send_keys("\u{e014}").await.unwrap();
    let active = browser.active_element().await.unwrap();
    active.send_keys("\u{e015}").await.unwrap();
    let active = browser.active_element().await.unwrap();
    assert_eq!(
        active.attr("data-label").await.unwrap().as_deref(),
        Some("B2")
    );
    active.send_keys("\u{e007}").await.unwrap();
    assert_eq!(seat_attr(&browser, 9, "aria-pressed").await, "true");
    // The mouse: seat C3 (premium).
    click(&browser, &seat(18)).await;
    assert_eq!(seat_attr(&browser, 18, "aria-pressed").await, "true");
    let summary = text(&browser, "#selection-summary").await;
    assert_eq!(summary, "Selected B2, C3: ₹550.00");

    // Someone else holds A6 and A7 meanwhile: the map shows it within the live refresh.
    let other = site.token(777_001, Role::Customer);
    let path = format!("/api/v1/shows/{show}/seats/lock");
    site.call("POST", &path, &other, Some(json!({ "seats": [5, 6] })))
        .await;
    let script = "return [5, 6].map(id => \
        document.querySelector(`#seatmap button[data-seat-id='${id}']`).dataset.status);";
    wait_for(
        &browser,
        "the other customer's hold",
        LIVE_REFRESH_MAX,
        script,
        |v| v == &json!(["locked", "locked"]),
    )
    .await;

    // The seat map as an artifact.
    let map = browser.find(Locator::Css("#show-panel")).await.unwrap();
    let png = map
        .screenshot()
        .await
        .expect("a screenshot of the seat map");
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "the screenshot is a PNG");
    let dir = artifacts_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("seat-map.png");
    std::fs::write(&path, &png).unwrap();
    println!(
        "seat map screenshot ({} bytes): {}",
        png.len(),
        path.display()
    );

    // Hold: the countdown runs and the ledger has the seats locked.
    click(&browser, "#hold").await;
    let script = "return document.getElementById('countdown').textContent;";
    let first_reading = wait_for(&browser, "the countdown", WAIT, script, |v| {
        v.as_str()
            .is_some_and(|t| t.starts_with("4:5") || t == "5:00")
    })
    .await;
    assert_eq!(site.seat_status(&show, 9).await, "locked");
    assert_eq!(site.seat_status(&show, 18).await, "locked");
    assert_eq!(seat_attr(&browser, 9, "data-status").await, "mine");
    wait_for(
        &browser,
        "the countdown to move",
        Duration::from_secs(3),
        script,
        |v| v != &first_reading,
    )
    .await;

    // Pay with the sandbox: a booking code, and the seats are booked.
    click(&browser, "#pay").await;
    let script = "const c = document.getElementById('confirmation'); \
                  return c.hidden ? null : document.getElementById('booking-code').textContent;";
    let code = wait_for(&browser, "the confirmation", WAIT, script, |v| {
        v.is_string()
    })
    .await;
    let code = code.as_str().unwrap().to_owned();
    assert!(code.starts_with("mumbai-"), "booking code {code}");
    assert!(!visible(&browser, "#hold-panel").await);
    assert_eq!(site.seat_status(&show, 9).await, "booked");
    let admin = site.token(900_000, Role::Admin);
    let booking = site
        .call("GET", &format!("/api/v1/bookings/{code}"), &admin, None)
        .await;
    assert_eq!(booking["status"], "confirmed");
    assert_eq!(booking["seats"], json!([9, 18]));
    wait_for(
        &browser,
        "the booked seat on the map",
        WAIT,
        &format!(
            "return document.querySelector({}).dataset.status;",
            json!(seat(9))
        ),
        |v| v == &json!("booked"),
    )
    .await;

    // My bookings lists it; cancelling it there cancels it in the ledger.
    click(&browser, "#my-bookings-button").await;
    let row = format!("#bookings tr[data-booking-id='{code}']");
    let script = format!(
        "const r = document.querySelector({}); return r ? r.querySelector('.booking-status').textContent : null;",
        json!(row)
    );
    let seats_cell = format!("{row} .booking-seats");
    wait_for(&browser, "the booking in My bookings", WAIT, &script, |v| {
        v == &json!("confirmed")
    })
    .await;
    assert_eq!(text(&browser, &seats_cell).await, "B2, C3");
    click(&browser, &format!("{row} button.cancel")).await;
    wait_for(&browser, "the cancelled booking", WAIT, &script, |v| {
        v == &json!("cancelled")
    })
    .await;
    let booking = site
        .call("GET", &format!("/api/v1/bookings/{code}"), &admin, None)
        .await;
    assert_eq!(booking["status"], "cancelled");
    assert!(text(&browser, "#bookings-message")
        .await
        .contains("is cancelled"));
    assert_eq!(site.seat_status(&show, 9).await, "available");

    browser.close().await.unwrap();
    site.stop().await;
}

/// Two customers in two browsers: a seat one of them holds appears as taken on the
/// other's map within a second and leaves the other's selection with a message; when
/// both press "Hold" for the same seat at once, exactly one gets it and the other is
/// told the seat was just taken; the winner's card is declined and the seat comes back
/// on both maps.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_browsers_compete_for_one_seat() {
    let driver = Chromedriver::start().await;
    let site = Site::start(Limits::default()).await;
    let title = format!("Duel {}", fastrand::u32(1_000..9_999));
    let show = site.show(&title, 2, 6).await;
    let password = "two browsers, one seat";
    site.account("asha@example.test", password, Role::Customer)
        .await;
    site.account("ravi@example.test", password, Role::Customer)
        .await;
    let (asha, ravi) = tokio::join!(driver.browser(), driver.browser());
    for (browser, email) in [(&asha, "asha@example.test"), (&ravi, "ravi@example.test")] {
        open_home(browser, &site).await;
        log_in(browser, email, password).await;
        open_show(browser, &title, 12).await;
    }

    // Both select A3; Asha holds it; Ravi's map shows it taken, live.
    click(&asha, &seat(2)).await;
    click(&ravi, &seat(2)).await;
    let held_at = Instant::now();
    click(&asha, "#hold").await;
    wait_for(
        &asha,
        "Asha's hold",
        WAIT,
        "return !document.getElementById('hold-panel').hidden;",
        |v| v == &json!(true),
    )
    .await;
    let script = format!(
        "return document.querySelector({}).dataset.status;",
        json!(seat(2))
    );
    wait_for(
        &ravi,
        "Asha's lock on Ravi's map",
        LIVE_REFRESH_MAX,
        &script,
        |v| v == &json!("locked"),
    )
    .await;
    println!(
        "another browser's lock appeared {:?} after Hold was clicked",
        held_at.elapsed()
    );
    assert_eq!(seat_attr(&ravi, 2, "aria-pressed").await, "false");
    assert_eq!(seat_attr(&ravi, 2, "aria-disabled").await, "true");
    let message = text(&ravi, "#seat-message").await;
    assert!(
        message.contains("A3 was just taken by someone else"),
        "{message}"
    );
    assert!(seat_attr(&ravi, 2, "aria-label")
        .await
        .ends_with("held by another customer, not available"));
    click(&asha, "#release").await;
    wait_for(
        &ravi,
        "the released seat",
        LIVE_REFRESH_MAX + WAIT,
        &script,
        |v| v == &json!("available"),
    )
    .await;

    // Both select B4 and press Hold at the same moment: one lock wins.
    let contested = 9;
    click(&asha, &seat(contested)).await;
    click(&ravi, &seat(contested)).await;
    tokio::join!(click(&asha, "#hold"), click(&ravi, "#hold"));
    let holding = "return !document.getElementById('hold-panel').hidden;";
    let mut winners = Vec::new();
    for browser in [&asha, &ravi] {
        let settled = "const m = document.getElementById('seat-message').textContent; \
                       return !document.getElementById('hold-panel').hidden || m.includes('just taken');";
        wait_for(browser, "the outcome of the race", WAIT, settled, |v| {
            v == &json!(true)
        })
        .await;
        if browser.execute(holding, vec![]).await.unwrap() == json!(true) {
            winners.push(browser);
        } else {
            let message = text(browser, "#seat-message").await;
            assert!(
                message.contains("B4 was just taken by someone else"),
                "{message}"
            );
            let script = format!(
                "return document.querySelector({}).dataset.status;",
                json!(seat(contested))
            );
            wait_for(browser, "the lost seat shown taken", WAIT, &script, |v| {
                v == &json!("locked")
            })
            .await;
        }
    }
    assert_eq!(
        winners.len(),
        1,
        "exactly one browser holds the contested seat"
    );
    assert_eq!(site.seat_status(&show, contested).await, "locked");

    // The winner's card is declined: the hold ends, and the seat is free again on both.
    let (winner, loser) = if std::ptr::eq(winners[0], &asha) {
        (&asha, &ravi)
    } else {
        (&ravi, &asha)
    };
    winner
        .find(Locator::Css("#pay-method"))
        .await
        .unwrap()
        .select_by_value("sandbox-decline")
        .await
        .unwrap();
    click(winner, "#pay").await;
    let script = "return document.getElementById('seat-message').textContent;";
    wait_for(winner, "the declined payment", WAIT, script, |v| {
        v.as_str()
            .is_some_and(|t| t.starts_with("The payment was declined") && t.contains("B4"))
    })
    .await;
    assert!(!visible(winner, "#hold-panel").await);
    let script = format!(
        "return document.querySelector({}).dataset.status;",
        json!(seat(contested))
    );
    for browser in [winner, loser] {
        wait_for(browser, "the released seat", WAIT, &script, |v| {
            v == &json!("available")
        })
        .await;
    }
    assert_eq!(site.seat_status(&show, contested).await, "available");

    asha.close().await.unwrap();
    ravi.close().await.unwrap();
    site.stop().await;
}

/// With a 3 s lock TTL, an unpaid hold runs out: the countdown reaches zero, the page
/// says the hold expired and frees the selection, and the ledger frees the seat.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unpaid_hold_expires_and_the_page_says_so() {
    let driver = Chromedriver::start().await;
    let limits = Limits {
        lock_ttl_ms_min: 1_000,
        lock_ttl_ms_default: 3_000,
        ..Limits::default()
    };
    let site = Site::start(limits).await;
    let title = format!("Matinee {}", fastrand::u32(1_000..9_999));
    let show = site.show(&title, 2, 5).await;
    site.account("late@example.test", "always a little late", Role::Customer)
        .await;
    let browser = driver.browser().await;
    open_home(&browser, &site).await;
    log_in(&browser, "late@example.test", "always a little late").await;
    open_show(&browser, &title, 10).await;
    click(&browser, &seat(4)).await;
    click(&browser, "#hold").await;
    let script = "return document.getElementById('countdown').textContent;";
    wait_for(&browser, "a countdown of 3 s or less", WAIT, script, |v| {
        matches!(v.as_str(), Some("0:03" | "0:02" | "0:01"))
    })
    .await;
    assert_eq!(site.seat_status(&show, 4).await, "locked");
    let script = "return document.getElementById('seat-message').textContent;";
    let message = wait_for(&browser, "the expiry message", WAIT, script, |v| {
        v.as_str().is_some_and(|t| t.contains("expired"))
    })
    .await;
    assert_eq!(
        message,
        json!(
            "Your hold on seat A5 expired and the seats were released. Select seats again to book."
        )
    );
    assert!(
        !visible(&browser, "#hold-panel").await,
        "no pay button after expiry"
    );
    assert_eq!(seat_attr(&browser, 4, "aria-pressed").await, "false");
    assert_eq!(
        text(&browser, "#selection-summary").await,
        "No seats selected."
    );
    // The sweeper expires the lock in the ledger; the map shows the seat free again.
    let script = format!(
        "return document.querySelector({}).dataset.status;",
        json!(seat(4))
    );
    wait_for(&browser, "the freed seat", WAIT, &script, |v| {
        v == &json!("available")
    })
    .await;
    assert_eq!(site.seat_status(&show, 4).await, "available");

    browser.close().await.unwrap();
    site.stop().await;
}

/// An SRE logs in on /cluster and sees every shard with its leader, the nodes by
/// region and their lag; a leadership transfer shows up as a new leader and a leader
/// change, live. A customer on the same page is told it is not for them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_cluster_page_shows_leaders_and_a_leader_change_to_an_sre() {
    let driver = Chromedriver::start().await;
    let site = Site::start(Limits::default()).await;
    site.account("sre@example.test", "pager goes beep", Role::Sre)
        .await;
    site.account(
        "shopper@example.test",
        "just here for films",
        Role::Customer,
    )
    .await;
    let browser = driver.browser().await;
    browser
        .goto(&format!("{}/cluster", site.base))
        .await
        .unwrap();
    log_in(&browser, "shopper@example.test", "just here for films").await;
    let script = "return document.getElementById('cluster-message').textContent;";
    wait_for(&browser, "the refusal for a customer", WAIT, script, |v| {
        v.as_str()
            .is_some_and(|t| t.contains("for SRE and admin accounts"))
    })
    .await;
    click(&browser, "#logout").await;
    log_in(&browser, "sre@example.test", "pager goes beep").await;

    let script = "return [...document.querySelectorAll('#shards tr')].map(r => [r.dataset.shard, r.dataset.leader]);";
    let shards = wait_for(&browser, "four shards with leaders", WAIT, script, |v| {
        v.as_array().is_some_and(|rows| {
            rows.len() == 4
                && rows
                    .iter()
                    .all(|r| r[1].as_str().is_some_and(|l| !l.is_empty()))
        })
    })
    .await;
    let names: Vec<&str> = shards
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r[0].as_str())
        .collect();
    assert_eq!(names, ["bengaluru", "delhi", "global", "mumbai"]);
    let regions = browser
        .execute(
            "return [...document.querySelectorAll('#regions .region')].map(r => r.dataset.region);",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(regions, json!(["region-1", "region-2", "region-3"]));
    let mumbai = text(&browser, "#shards tr[data-shard='mumbai']").await;
    assert!(
        mumbai.contains("applied ") && mumbai.contains("lag "),
        "{mumbai}"
    );
    assert!(
        mumbai.contains("Leader") && mumbai.contains("Follower"),
        "{mumbai}"
    );

    // Hand Mumbai's leadership to another node; the page follows.
    let leader: u64 = shards
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r[0] == "mumbai")
        .unwrap()[1]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let target = if leader == 1 { 2 } else { 1 };
    let address = &site
        .cluster
        .file
        .nodes
        .iter()
        .find(|n| n.id == leader)
        .unwrap()
        .client_addr;
    let response = site
        .http
        .post(format!(
            "http://{address}/admin/shards/mumbai/transfer-leader"
        ))
        .json(&json!({ "to": target }))
        .send()
        .await
        .unwrap();
    assert!(
        response.status().is_success(),
        "transfer: {}",
        response.status()
    );
    let script =
        "return document.querySelector(\"#shards tr[data-shard='mumbai']\").dataset.leader;";
    wait_for(&browser, "the new leader of mumbai", WAIT, script, |v| {
        v == &json!(target.to_string())
    })
    .await;
    let script = "return [...document.querySelectorAll(\"#changes tr[data-shard='mumbai']\")].map(r => r.textContent);";
    let changes = wait_for(&browser, "a leader change row", WAIT, script, |v| {
        v.as_array().is_some_and(|rows| !rows.is_empty())
    })
    .await;
    let newest = changes[0].as_str().unwrap();
    assert!(newest.contains(&format!("node {target}")), "{newest}");

    browser.close().await.unwrap();
    site.stop().await;
}
