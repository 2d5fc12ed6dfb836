// The booking page: pick a city, a date and a show, select seats on the seat map, hold
// them (a ledger lock), watch the hold's countdown, pay with the sandbox gateway and get
// a booking code; list and cancel one's bookings.
//
// The seat map is read every POLL_MS with session consistency at the highest index this
// page has seen (X-Index of its reads and writes), so it never goes back in time and
// other people's locks appear within a second.
"use strict";

(() => {
  const { api, idempotencyKey, money, when, el, show, say } = SeatLedger;
  const $ = (id) => document.getElementById(id);

  const POLL_MS = 500;
  const PAYMENT_POLL_MS = 500;
  const SHOWS_PAGE = 50;

  const page = {
    show: null, // the open show (API object)
    seats: [], // its seat map, by seat id
    selected: new Set(), // seat ids picked but not held
    hold: null, // { lock_id, booking_id, seats, expires_ms, total, currency, key }
    minIndex: 0, // highest X-Index seen for the open show's shard
    pollTimer: null,
    polling: false,
    countdownTimer: null,
    paying: false,
    showTitles: new Map(),
    searchSeq: 0, // the latest show search; older answers are dropped
  };

  // ----- helpers --------------------------------------------------------------------

  function noteIndex(headers) {
    const index = Number(headers.get("x-index"));
    if (Number.isFinite(index) && index > page.minIndex) page.minIndex = index;
  }

  function seatLabel(seat) {
    return `${seat.row}${seat.number}`;
  }

  function labels(ids) {
    return ids.map((id) => (page.seats[id] ? seatLabel(page.seats[id]) : `#${id}`)).join(", ");
  }

  function isMine(id) {
    return Boolean(page.hold && page.hold.seats.includes(id));
  }

  function seatState(seat) {
    if (isMine(seat.seat_id) && seat.status !== "available") return "mine";
    return seat.status;
  }

  function spokenState(seat) {
    switch (seatState(seat)) {
      case "mine": return "held for you";
      case "locked": return "held by another customer, not available";
      case "booked": return "sold, not available";
      default: return page.selected.has(seat.seat_id) ? "available, selected" : "available";
    }
  }

  function seatName(seat) {
    return `Row ${seat.row} seat ${seat.number}, ${seat.category}, ` +
      `${money(seat.price_minor, page.show.currency)}, ${spokenState(seat)}`;
  }

  // ----- cities and shows -----------------------------------------------------------

  async function loadCities() {
    const { data } = await api("GET", "/api/v1/cities");
    const select = $("city");
    select.replaceChildren(...data.items.map((city) => el("option", { value: city.id }, city.name)));
  }

  async function searchShows() {
    const params = new URLSearchParams({ location: $("city").value, limit: SHOWS_PAGE });
    if ($("date").value) params.set("date", $("date").value);
    if ($("search").value.trim()) params.set("search", $("search").value.trim());
    const list = $("show-list");
    // Only the latest search may render: an earlier, slower answer is dropped.
    const seq = ++page.searchSeq;
    list.setAttribute("aria-busy", "true");
    try {
      const { data } = await api("GET", `/api/v1/shows?${params}`);
      if (seq !== page.searchSeq) return;
      $("show-count").textContent = data.items.length
        ? `${data.items.length} show${data.items.length === 1 ? "" : "s"} found.`
        : "No shows match; try another date or title.";
      list.replaceChildren(...data.items.map((item) => el("li", {},
        el("button", {
          type: "button", class: "show", "data-show-id": item.id,
          "aria-current": page.show && page.show.id === item.id ? "true" : "false",
          onclick: () => openShow(item.id),
        },
        el("span", { class: "show-title" }, item.title),
        el("span", { class: "show-meta" }, `${item.seat_counts.available} seats left`),
        el("span", { class: "show-meta" }, `${item.theater_name}, screen ${item.screen + 1}`),
        el("span", { class: "show-meta" }, when(item.start_time))))));
    } catch (error) {
      if (seq !== page.searchSeq) return;
      $("show-count").textContent = `Could not load shows: ${error.message}`;
    }
    list.setAttribute("aria-busy", "false");
  }

  // ----- the seat map ---------------------------------------------------------------

  async function openShow(id) {
    stopPolling();
    clearHold();
    page.selected.clear();
    page.minIndex = 0;
    page.seats = [];
    say($("seat-message"), "");
    show($("confirmation"), false);
    try {
      const { data, headers } = await api("GET", `/api/v1/shows/${encodeURIComponent(id)}`);
      noteIndex(headers);
      page.show = data;
    } catch (error) {
      say($("seat-message"), `Could not open the show: ${error.message}`, "error");
      return;
    }
    for (const button of document.querySelectorAll("#show-list button")) {
      button.setAttribute("aria-current", button.dataset.showId === id ? "true" : "false");
    }
    $("show-heading").textContent = page.show.title;
    $("show-info").textContent = `${page.show.theater_name}, screen ${page.show.screen + 1}, ` +
      `${when(page.show.start_time)}`;
    renderLegend();
    $("seatmap").replaceChildren();
    show($("show-panel"), true);
    await refreshSeats();
    schedulePoll();
    $("show-heading").scrollIntoView({ block: "start" });
  }

  function renderLegend() {
    const prices = page.show.prices;
    const currency = page.show.currency;
    const swatch = (classes) => el("span", { class: `swatch ${classes}`, "aria-hidden": "true" });
    $("legend").replaceChildren(
      el("li", {}, swatch("cat-normal"), `Normal ${money(prices.normal_minor, currency)}`),
      el("li", {}, swatch("cat-premium"), `Premium ${money(prices.premium_minor, currency)}`),
      el("li", {}, swatch("cat-vip"), `VIP ${money(prices.vip_minor, currency)}`),
      el("li", {}, swatch("selected"), "Selected"),
      el("li", {}, swatch("status-mine"), "Held for you"),
      el("li", {}, swatch("status-locked"), "Held by someone else"),
      el("li", {}, swatch("status-booked"), "Sold"));
  }

  function buildMap() {
    const rows = [];
    const byLabel = new Map();
    for (const seat of page.seats) {
      if (!byLabel.has(seat.row)) {
        byLabel.set(seat.row, []);
        rows.push(seat.row);
      }
      byLabel.get(seat.row).push(seat);
    }
    $("seatmap").replaceChildren(...rows.map((row) => el("div", {
      class: "seat-row", role: "group", "aria-label": `Row ${row}`,
    },
    el("span", { class: "row-label", "aria-hidden": "true" }, row),
    byLabel.get(row).sort((a, b) => a.number - b.number).map((seat) => el("button", {
      type: "button",
      class: "seat",
      "data-seat-id": seat.seat_id,
      "data-label": seatLabel(seat),
      "aria-describedby": "seatmap-help",
      onclick: () => toggleSeat(seat.seat_id),
    }, String(seat.number))))));
  }

  function renderSeats() {
    const buttons = $("seatmap").querySelectorAll("button.seat");
    if (buttons.length !== page.seats.length) {
      buildMap();
      return renderSeats();
    }
    for (const button of buttons) {
      const seat = page.seats[Number(button.dataset.seatId)];
      const state = seatState(seat);
      const classes = `seat cat-${seat.category} status-${state}`;
      if (button.dataset.status && button.dataset.status !== state) {
        button.classList.remove("changed");
        void button.offsetWidth; // restart the highlight animation
        button.className = `${classes} changed`;
      } else if (!button.classList.contains("changed")) {
        button.className = classes;
      }
      button.dataset.status = state;
      const taken = state !== "available";
      button.setAttribute("aria-disabled", taken ? "true" : "false");
      button.setAttribute("aria-pressed", page.selected.has(seat.seat_id) ? "true" : "false");
      button.setAttribute("aria-label", seatName(seat));
      button.title = seatName(seat);
    }
    renderSummary();
  }

  function renderSummary() {
    const ids = [...page.selected].sort((a, b) => a - b);
    const total = ids.reduce((sum, id) => sum + page.seats[id].price_minor, 0);
    $("selection-summary").textContent = ids.length
      ? `Selected ${labels(ids)}: ${money(total, page.show.currency)}`
      : page.hold ? "Your seats are held; pay before the time runs out." : "No seats selected.";
    $("hold").disabled = ids.length === 0 || Boolean(page.hold);
  }

  async function refreshSeats() {
    if (!page.show) return;
    const showId = page.show.id;
    const headers = page.minIndex ? { "X-Min-Index": String(page.minIndex) } : {};
    const { data, headers: replyHeaders } = await api("GET",
      `/api/v1/shows/${encodeURIComponent(showId)}/seats?consistency=session`, undefined,
      { headers });
    if (!page.show || page.show.id !== showId) return;
    noteIndex(replyHeaders);
    page.seats = [];
    for (const seat of data.seats) page.seats[seat.seat_id] = seat;
    // Seats someone else took while they were only selected here.
    const lost = [...page.selected].filter((id) => page.seats[id].status !== "available");
    if (lost.length) {
      lost.forEach((id) => page.selected.delete(id));
      say($("seat-message"), `Seat ${labels(lost)} was just taken by someone else and is ` +
        "no longer selected. Please pick another seat.", "error");
    }
    renderSeats();
  }

  function schedulePoll() {
    stopPolling();
    page.pollTimer = setTimeout(async () => {
      if (!page.polling) {
        page.polling = true;
        try {
          await refreshSeats();
        } catch (_) {
          // A failed poll is retried at the next tick; the map keeps its last state.
        } finally {
          page.polling = false;
        }
      }
      if (page.show) schedulePoll();
    }, POLL_MS);
  }

  function stopPolling() {
    if (page.pollTimer) clearTimeout(page.pollTimer);
    page.pollTimer = null;
  }

  function toggleSeat(id) {
    const seat = page.seats[id];
    if (!seat) return;
    if (page.hold) {
      say($("seat-message"), "Pay for or release the seats you hold before choosing others.", "info");
      return;
    }
    if (seat.status !== "available") {
      say($("seat-message"), `Seat ${seatLabel(seat)} is not available.`, "info");
      return;
    }
    show($("confirmation"), false);
    if (page.selected.has(id)) page.selected.delete(id);
    else page.selected.add(id);
    say($("seat-message"), "");
    renderSeats();
  }

  // Arrow keys move between seats: left and right in a row, up and down across rows.
  function onSeatKey(event) {
    const current = event.target.closest("button.seat");
    if (!current) return;
    const moves = { ArrowLeft: [0, -1], ArrowRight: [0, 1], ArrowUp: [-1, 0], ArrowDown: [1, 0] };
    const move = moves[event.key];
    if (!move) return;
    event.preventDefault();
    const rows = [...$("seatmap").querySelectorAll(".seat-row")];
    const rowIndex = rows.indexOf(current.parentElement);
    const seats = [...current.parentElement.querySelectorAll("button.seat")];
    const column = seats.indexOf(current);
    const targetRow = rows[Math.min(rows.length - 1, Math.max(0, rowIndex + move[0]))];
    const targetSeats = [...targetRow.querySelectorAll("button.seat")];
    const target = targetSeats[Math.min(targetSeats.length - 1, Math.max(0, column + move[1]))];
    if (target) target.focus();
  }

  // ----- hold, countdown, payment ---------------------------------------------------

  async function holdSeats() {
    if (!SeatLedger.session()) {
      say($("seat-message"), "Log in or sign up (at the top of the page) to hold seats.", "error");
      return;
    }
    const ids = [...page.selected].sort((a, b) => a - b);
    if (!ids.length) return;
    $("hold").disabled = true;
    try {
      const { data, headers } = await api("POST",
        `/api/v1/shows/${encodeURIComponent(page.show.id)}/seats/lock`, { seats: ids },
        { headers: { "Idempotency-Key": idempotencyKey() } });
      noteIndex(headers);
      page.selected.clear();
      page.hold = {
        lock_id: data.lock_id,
        booking_id: data.booking_id,
        seats: data.seats,
        expires_ms: Date.parse(data.expires_at),
        total: data.total_price_minor,
        currency: page.show.currency,
        key: idempotencyKey(),
      };
      say($("seat-message"), `Seats ${labels(data.seats)} are held for you: ` +
        `${money(data.total_price_minor, page.show.currency)} to pay.`, "ok");
      show($("hold-panel"), true);
      startCountdown();
      await refreshSeats();
      $("pay").focus();
    } catch (error) {
      if (error.kind === "seats-taken") {
        const taken = (error.problem.seats || []).filter((id) => page.seats[id]);
        taken.forEach((id) => {
          page.selected.delete(id);
          page.seats[id].status = "locked";
        });
        say($("seat-message"), `Sorry, seat ${labels(taken)} was just taken by someone else. ` +
          "It is no longer selected; please pick another seat.", "error");
        renderSeats();
        refreshSeats().catch(() => {});
      } else if (error.status === 401) {
        say($("seat-message"), "Your session ended; log in again to hold seats.", "error");
      } else {
        say($("seat-message"), `Could not hold the seats: ${error.message}`, "error");
      }
      renderSummary();
    }
  }

  function startCountdown() {
    stopCountdown();
    const tick = () => {
      if (!page.hold) return;
      const left = page.hold.expires_ms - Date.now();
      if (left <= 0) {
        expireHold();
        return;
      }
      const seconds = Math.ceil(left / 1000);
      const text = `${Math.floor(seconds / 60)}:${String(seconds % 60).padStart(2, "0")}`;
      $("countdown").textContent = text;
      $("countdown").classList.toggle("urgent", seconds <= 30);
    };
    tick();
    page.countdownTimer = setInterval(tick, 250);
  }

  function stopCountdown() {
    if (page.countdownTimer) clearInterval(page.countdownTimer);
    page.countdownTimer = null;
  }

  function clearHold() {
    stopCountdown();
    page.hold = null;
    page.paying = false;
    show($("hold-panel"), false);
  }

  function expireHold() {
    if (!page.hold) return;
    const seats = page.hold.seats;
    clearHold();
    page.selected.clear();
    say($("seat-message"), `Your hold on seat ${labels(seats)} expired and the seats were ` +
      "released. Select seats again to book.", "error");
    renderSeats();
    refreshSeats().catch(() => {});
  }

  async function pay() {
    if (!page.hold || page.paying) return;
    page.paying = true;
    $("pay").disabled = true;
    const hold = page.hold;
    try {
      const { data } = await api("POST",
        `/api/v1/bookings/${encodeURIComponent(hold.booking_id)}/payment`,
        { method: $("pay-method").value }, { headers: { "Idempotency-Key": hold.key } });
      await settle(hold, data);
    } catch (error) {
      if (error.kind === "lock-expired") expireHold();
      else say($("seat-message"), `Payment did not go through: ${error.message}`, "error");
    } finally {
      page.paying = false;
      $("pay").disabled = false;
    }
  }

  /// Follows a payment until it completes, fails, or the hold runs out.
  async function settle(hold, payment) {
    let status = payment;
    while (status.status === "pending" && page.hold === hold) {
      say($("seat-message"), "Payment is being processed…", "info");
      await new Promise((resolve) => setTimeout(resolve, PAYMENT_POLL_MS));
      if (Date.now() > hold.expires_ms + 2000) break;
      ({ data: status } = await api("GET",
        `/api/v1/bookings/${encodeURIComponent(hold.booking_id)}/payment/status`));
    }
    if (page.hold !== hold && status.status !== "completed") return;
    if (status.status === "completed") {
      confirmBooking(hold);
    } else if (status.status === "pending") {
      expireHold();
    } else if (status.status === "refund_pending" || status.status === "refunded") {
      clearHold();
      say($("seat-message"), "The payment went through after your hold expired, so the " +
        "seats were not kept; the full amount is refunded.", "error");
      await refreshSeats();
    } else {
      clearHold();
      say($("seat-message"), `The payment was declined${status.reason ? ` (${status.reason})` : ""}. ` +
        `Seat ${labels(hold.seats)} was released.`, "error");
      await refreshSeats();
    }
  }

  function confirmBooking(hold) {
    clearHold();
    say($("seat-message"), "");
    $("booking-code").textContent = hold.booking_id;
    $("confirmation-detail").textContent = `Seats ${labels(hold.seats)}, paid ` +
      `${money(hold.total, hold.currency)}.`;
    show($("confirmation"), true);
    refreshSeats().catch(() => {});
    if (!$("bookings-panel").hidden) loadBookings();
  }

  async function releaseHold() {
    if (!page.hold) return;
    const hold = page.hold;
    try {
      const { headers } = await api("DELETE", `/api/v1/locks/${encodeURIComponent(hold.lock_id)}`,
        undefined, { headers: { "Idempotency-Key": idempotencyKey() } });
      noteIndex(headers);
      clearHold();
      say($("seat-message"), `Seat ${labels(hold.seats)} released.`, "info");
      await refreshSeats();
    } catch (error) {
      say($("seat-message"), `Could not release the seats: ${error.message}`, "error");
    }
  }

  // ----- my bookings ----------------------------------------------------------------

  /// A booked show's title and its seats' labels (row and number), fetched once per show.
  async function showDetails(showId) {
    if (!page.showTitles.has(showId)) {
      const path = `/api/v1/shows/${encodeURIComponent(showId)}`;
      try {
        const [{ data: item }, { data: map }] = await Promise.all([
          api("GET", path), api("GET", `${path}/seats`)]);
        const seatLabels = new Map(map.seats.map((seat) => [seat.seat_id, seatLabel(seat)]));
        page.showTitles.set(showId, {
          title: `${item.title}, ${item.theater_name}, ${when(item.start_time)}`,
          seatLabels,
        });
      } catch (_) {
        return { title: showId, seatLabels: new Map() };
      }
    }
    return page.showTitles.get(showId);
  }

  async function loadBookings() {
    show($("bookings-panel"), true);
    const body = $("bookings");
    try {
      const { data } = await api("GET", "/api/v1/bookings?limit=50");
      const rows = [];
      for (const booking of data.items) {
        const cancellable = booking.status === "confirmed" || booking.status === "pending_payment";
        const details = await showDetails(booking.show_id);
        rows.push(el("tr", { "data-booking-id": booking.booking_id },
          el("td", { class: "booking-code" }, booking.booking_id),
          el("td", {}, details.title),
          el("td", { class: "booking-seats" },
            booking.seats.map((id) => details.seatLabels.get(id) || `#${id}`).join(", ")),
          el("td", {}, money(booking.total_price_minor, booking.currency)),
          el("td", { class: "booking-status" }, booking.status.replace("_", " ")),
          el("td", {}, cancellable ? el("button", {
            type: "button", class: "cancel",
            "aria-label": `Cancel booking ${booking.booking_id}`,
            onclick: () => cancelBooking(booking.booking_id),
          }, "Cancel") : "")));
      }
      body.replaceChildren(...rows);
      say($("bookings-message"), rows.length ? "" : "You have no bookings yet.", "info");
    } catch (error) {
      say($("bookings-message"), `Could not load your bookings: ${error.message}`, "error");
    }
  }

  async function cancelBooking(id) {
    try {
      const { data } = await api("DELETE", `/api/v1/bookings/${encodeURIComponent(id)}`,
        undefined, { headers: { "Idempotency-Key": idempotencyKey() } });
      const refund = data.refund_due_minor
        ? ` A refund of ${money(data.refund_due_minor, data.currency)} is on its way.` : "";
      await loadBookings();
      say($("bookings-message"), `Booking ${id} is cancelled.${refund}`, "ok");
      if (page.show) refreshSeats().catch(() => {});
    } catch (error) {
      say($("bookings-message"), `Could not cancel ${id}: ${error.message}`, "error");
    }
  }

  // ----- wiring ---------------------------------------------------------------------

  document.addEventListener("DOMContentLoaded", async () => {
    SeatLedger.wireAccount({
      forms: "account-forms", bar: "account-bar", who: "account-who",
      loginForm: "login-form", signupForm: "signup-form", logout: "logout",
      message: "account-message",
    }, (session) => {
      if (!session) {
        show($("bookings-panel"), false);
        clearHold();
        if (page.show) renderSeats();
      }
    });
    $("find-form").addEventListener("submit", (event) => {
      event.preventDefault();
      searchShows();
    });
    $("city").addEventListener("change", searchShows);
    $("date").addEventListener("change", searchShows);
    $("seatmap").addEventListener("keydown", onSeatKey);
    $("hold").addEventListener("click", holdSeats);
    $("pay").addEventListener("click", pay);
    $("release").addEventListener("click", releaseHold);
    $("my-bookings-button").addEventListener("click", loadBookings);
    try {
      await loadCities();
      await searchShows();
    } catch (error) {
      $("show-count").textContent = `Could not reach the service: ${error.message}`;
    }
    document.body.dataset.ready = "true";
  });
})();
