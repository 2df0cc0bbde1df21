// geventchat browser client. Plain JavaScript, no build step, nothing from elsewhere.
//
// It speaks the server's line protocol over a WebSocket at /ws of this same server: one
// text frame per line, both ways. Text from the network is only ever put into the page
// with textContent / text nodes, never parsed as HTML.
"use strict";

(function () {
  const MAX_MESSAGES = 2000; // older lines are dropped from the page
  const MAX_HISTORY = 200; // sent lines kept for arrow-up
  const BACKOFF_FIRST = 1000; // ms before the first reconnect attempt
  const BACKOFF_MAX = 30000; // ms between attempts at most
  const REFRESH_EVERY = 60000; // ms between quiet /rooms + /who while the page is visible
  // ms after someone joins or leaves your room before a quiet /rooms: they came from or
  // went to another room, whose count only the server knows. One at a time, so a busy
  // room costs at most one /rooms per this many ms.
  const ROOMS_AFTER_PRESENCE = 1500;
  const ROOM_RE = /^([A-Za-z0-9_\-#.]{1,32}) \((\d+)\)$/;
  const WHO_RE = /^Members of (\S+) \((\d+)\): ?(.*)$/;
  const WELCOME_RE = /^Welcome, (\S+)! You are in (\S+)\./;
  // A replay block (recent messages from before): its head, its lines (UTC time), its end.
  const HISTORY_START_RE = /^\*\*\* Recent messages in (\S+) \((\d+)\):$/;
  const HISTORY_LINE_RE = /^\*\*\* \[(\d{4}-\d\d-\d\d) (\d\d:\d\d:\d\d)\] ([\s\S]*)$/;
  const HISTORY_END = "*** End of recent messages";
  const URL_RE = /\bhttps?:\/\/[^\s<>"']+[^\s<>"'.,;:!?)\]]/g;

  const $ = (id) => document.getElementById(id);
  const app = $("app");
  const list = $("messages");
  const input = $("input");
  const statusEl = $("status");
  const banner = $("banner");
  const bannerText = $("banner-text");
  const roomsEl = $("rooms");
  const membersEl = $("members");
  const jump = $("jump");

  const state = {
    ws: null,
    nick: "",
    room: "",
    wantNick: "", // the nickname the user chose, restored after a reconnect
    wantRoom: "", // likewise the room
    rooms: new Map(), // name -> count
    members: [],
    attempts: 0,
    timer: null, // reconnect timer
    countdown: null,
    userQuit: false,
    history: [],
    historyPos: -1,
    draft: "",
    replay: null, // inside a replay block: { remaining: lines still to come }
    quietRooms: 0, // /rooms sent by the page itself: hide their replies
    quietWho: 0,
    roomBatch: null, // room lines being collected (/rooms, /stats)
    roomBatchTimer: null,
    whoBatch: null, // {room, total, names}
    refreshTimer: null,
    roomsTimer: null, // the pending /rooms after presence
  };

  // ------------------------------------------------------------------ the connection

  function socketUrl() {
    return (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws";
  }

  function connect() {
    clearTimeout(state.timer);
    clearInterval(state.countdown);
    state.timer = state.countdown = null;
    if (state.ws) return;
    state.userQuit = false;
    setStatus("connecting", "Connecting\u2026");
    let ws;
    try {
      ws = new WebSocket(socketUrl());
    } catch (err) {
      scheduleReconnect();
      return;
    }
    state.ws = ws;
    let opened = false; // a failed attempt is no news: the banner counts down to the next
    ws.onopen = () => {
      opened = true;
    };
    ws.onmessage = (event) => {
      if (typeof event.data === "string") receive(event.data);
    };
    ws.onclose = (event) => {
      if (state.ws !== ws) return;
      state.ws = null;
      state.quietRooms = state.quietWho = 0;
      state.roomBatch = state.whoBatch = null;
      if (state.userQuit) {
        setStatus("left", "Left");
        showBanner("You left the chat.", "Join again");
        addLocal("You left the chat.");
      } else {
        if (opened) addLocal(event.code === 1001 ? "The server went away." : "Connection lost.");
        scheduleReconnect();
      }
    };
  }

  function scheduleReconnect() {
    const base = Math.min(BACKOFF_MAX, BACKOFF_FIRST * Math.pow(2, state.attempts));
    const delay = Math.round(base * (0.75 + Math.random() * 0.5)); // jitter: not all at once
    state.attempts += 1;
    let due = Date.now() + delay;
    const tick = () => {
      const left = Math.max(0, Math.ceil((due - Date.now()) / 1000));
      setStatus("disconnected", "Disconnected");
      showBanner("Disconnected. Reconnecting in " + left + " s\u2026", "Reconnect now");
    };
    tick();
    state.countdown = setInterval(tick, 500);
    state.timer = setTimeout(connect, delay);
  }

  function sendLine(line) {
    const ws = state.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) return false;
    ws.send(line);
    return true;
  }

  function quietRefresh() {
    // The page's own /rooms and /who: their replies update the panels, not the log.
    if (sendLine("/rooms")) state.quietRooms += 1;
    if (sendLine("/who")) state.quietWho += 1;
  }

  function roomsSoon() {
    if (state.roomsTimer) return;
    state.roomsTimer = setTimeout(() => {
      state.roomsTimer = null;
      if (sendLine("/rooms")) state.quietRooms += 1;
    }, ROOMS_AFTER_PRESENCE);
  }

  function setStatus(name, text) {
    app.dataset.state = name;
    statusEl.dataset.state = name;
    statusEl.textContent = text;
    if (name === "connected") hideBanner();
  }

  function showBanner(text, button) {
    bannerText.textContent = text;
    $("reconnect-now").textContent = button;
    banner.hidden = false;
  }

  function hideBanner() {
    banner.hidden = true;
  }

  // ---------------------------------------------------------------- received lines

  function receive(line) {
    // Room lines come in a block with nothing between them; the first other line ends it.
    const roomMatch = line.startsWith("*** ") ? ROOM_RE.exec(line.slice(4)) : null;
    if (!roomMatch && state.roomBatch) endRoomBatch();
    if (replayed(line)) return;

    if (line.startsWith("*** Error: ")) {
      addMessage("error", null, line.slice(4));
    } else if (line.startsWith("*** ")) {
      notice(line.slice(4), roomMatch);
    } else if (line.startsWith("* ")) {
      const rest = line.slice(2);
      const space = rest.indexOf(" ");
      const nick = space < 0 ? rest : rest.slice(0, space);
      addMessage("action", nick, space < 0 ? "" : rest.slice(space + 1));
    } else {
      let m = /^\*([^*\s]+)\* ([\s\S]*)$/.exec(line);
      if (m) {
        addMessage("private", m[1], m[2]);
        return;
      }
      m = /^([^\s:*][^\s:]*): ([\s\S]*)$/.exec(line);
      if (m) addMessage("chat", m[1], m[2]);
      else addMessage("other", null, line);
    }
  }

  // The lines of a replay block are history: dimmed, with the time they were relayed (in
  // local time), never counted as new. A server without blocks sends none of these lines;
  // a block cut short ends at the first line that is not one of its own.
  function replayed(line) {
    if (state.replay) {
      if (line === HISTORY_END) {
        state.replay = null;
        addMessage("notice", null, line.slice(4), "history");
        return true;
      }
      const m = state.replay.remaining > 0 ? HISTORY_LINE_RE.exec(line) : null;
      const when = m ? new Date(m[1] + "T" + m[2] + "Z") : null;
      if (when && !isNaN(when.getTime())) {
        state.replay.remaining -= 1;
        const action = /^\* (\S+) ([\s\S]*)$/.exec(m[3]);
        const chat = action ? null : /^([^\s:*][^\s:]*): ([\s\S]*)$/.exec(m[3]);
        if (action) addMessage("action", action[1], action[2], "history", when);
        else if (chat) addMessage("chat", chat[1], chat[2], "history", when);
        else addMessage("other", null, m[3], "history", when);
        return true;
      }
      state.replay = null;
    }
    const start = HISTORY_START_RE.exec(line);
    if (!start) return false;
    state.replay = { remaining: Number(start[2]) };
    addMessage("notice", null, line.slice(4), "history");
    return true;
  }

  function notice(text, roomMatch) {
    let m;
    if (text.startsWith("  ")) {
      // A table row of a reply (/help's "  /nick NAME        change your nickname"): its
      // columns are aligned with spaces, so it is shown in a fixed-width font.
      addMessage("notice", null, text, "columns");
      return;
    }
    if ((m = /^To (\S+): ([\s\S]*)$/.exec(text))) {
      // The server's confirmation of our /msg: shown as the private message it is.
      addMessage("private", m[1], m[2], "self outgoing");
      return;
    }
    if (roomMatch) {
      if (!state.roomBatch) state.roomBatch = { quiet: state.quietRooms > 0, rooms: new Map() };
      state.roomBatch.rooms.set(roomMatch[1], Number(roomMatch[2]));
      // A reply's lines arrive together: if nothing follows soon, the list is complete.
      clearTimeout(state.roomBatchTimer);
      state.roomBatchTimer = setTimeout(() => state.roomBatch && endRoomBatch(), 250);
      if (state.roomBatch.quiet) return;
    } else if ((m = WHO_RE.exec(text))) {
      if (!state.whoBatch) state.whoBatch = { room: m[1], total: Number(m[2]), names: [], quiet: state.quietWho > 0 };
      const batch = state.whoBatch;
      if (m[3]) batch.names.push(...m[3].split(" ").filter(Boolean));
      if (batch.names.length >= batch.total) {
        state.whoBatch = null;
        if (batch.quiet) state.quietWho -= 1;
        if (batch.room.toLowerCase() === state.room.toLowerCase()) setMembers(batch.names);
      }
      if (batch.quiet) return;
    } else if ((m = WELCOME_RE.exec(text))) {
      state.attempts = 0;
      setStatus("connected", "Connected");
      setNick(m[1]);
      setRoom(m[2]);
      state.rooms = new Map();
      keepLobby();
      setMembers([]);
      // After a reconnect: take back the chosen nickname and room.
      if (state.wantNick && state.wantNick.toLowerCase() !== m[1].toLowerCase()) sendLine("/nick " + state.wantNick);
      if (state.wantRoom && state.wantRoom.toLowerCase() !== m[2].toLowerCase()) sendLine("/join " + state.wantRoom);
      quietRefresh();
    } else if ((m = /^You are now known as (\S+)$/.exec(text))) {
      const old = state.nick;
      state.members = state.members.map((n) => (sameName(n, old) ? m[1] : n));
      setNick(m[1]);
      state.wantNick = m[1];
      renderMembers();
    } else if ((m = /^You are now in (\S+)$/.exec(text))) {
      setRoom(m[1]);
      state.wantRoom = m[1];
      setMembers([]);
      quietRefresh();
    } else if ((m = /^(\S+) joined (\S+)$/.exec(text))) {
      if (sameRoom(m[2]) && !hasMember(m[1])) setMembers(state.members.concat([m[1]]));
      roomsSoon();
    } else if ((m = /^(\S+) left (\S+)$/.exec(text))) {
      if (sameRoom(m[2])) setMembers(state.members.filter((n) => !sameName(n, m[1])));
      roomsSoon();
    } else if ((m = /^(\S+) is now known as (\S+)$/.exec(text))) {
      setMembers(state.members.map((n) => (sameName(n, m[1]) ? m[2] : n)));
    } else if ((m = /^(\S+) quit( \(.*\))?$/.exec(text))) {
      setMembers(state.members.filter((n) => !sameName(n, m[1])));
    }
    addMessage("notice", null, text);
  }

  function endRoomBatch() {
    clearTimeout(state.roomBatchTimer);
    const batch = state.roomBatch;
    state.roomBatch = null;
    if (batch.quiet) state.quietRooms = Math.max(0, state.quietRooms - 1);
    state.rooms = batch.rooms;
    keepLobby();
    renderRooms();
  }

  // The first room is always there to go back to, even when nobody is in it (the server
  // lists only rooms with members).
  const LOBBY = "lobby";
  function keepLobby() {
    if (!Array.from(state.rooms.keys()).some((name) => sameName(name, LOBBY))) state.rooms.set(LOBBY, 0);
  }

  const sameName = (a, b) => a.toLowerCase() === b.toLowerCase();
  const sameRoom = (name) => sameName(name, state.room);
  const hasMember = (nick) => state.members.some((n) => sameName(n, nick));

  function setNick(nick) {
    state.nick = nick;
    $("nick-name").textContent = nick;
  }

  function setRoom(room) {
    state.room = room;
    $("room-name").textContent = room;
    document.title = room + " \u2013 geventchat";
    renderRooms();
  }

  function setMembers(names) {
    state.members = names.slice();
    if (state.room) state.rooms.set(state.room, names.length || state.rooms.get(state.room) || 1);
    renderMembers();
    renderRooms();
  }

  // ------------------------------------------------------------------------ display

  function nickHue(nick) {
    // FNV-1a over the folded name, spread over 24 well-separated hues.
    let h = 0x811c9dc5;
    const s = nick.toLowerCase();
    for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193) >>> 0;
    return (h % 24) * 15;
  }

  function nickSpan(nick, clickable = true) {
    const span = document.createElement("span");
    span.className = "nick";
    span.textContent = nick;
    span.style.setProperty("--hue", String(nickHue(nick)));
    if (clickable) {
      span.title = "Send a private message to " + nick;
      span.addEventListener("click", () => startPrivate(nick));
    }
    return span;
  }

  // A list entry that the keyboard reaches (Tab, then Enter or Space): a button filling the
  // row, or plain text when there is nothing to do (your own room, yourself).
  function entry(li, children, title, action) {
    const el = document.createElement(action ? "button" : "span");
    el.className = "entry";
    if (action) {
      el.type = "button";
      el.title = title;
      el.addEventListener("click", action);
    }
    el.append(...children);
    li.appendChild(el);
  }

  // Text with web addresses as links; every piece goes in as text.
  function appendText(parent, text) {
    let last = 0;
    URL_RE.lastIndex = 0;
    let m;
    while ((m = URL_RE.exec(text))) {
      if (m.index > last) parent.appendChild(document.createTextNode(text.slice(last, m.index)));
      let url = null;
      try {
        url = new URL(m[0]);
      } catch (err) {
        url = null;
      }
      if (url && (url.protocol === "http:" || url.protocol === "https:")) {
        const a = document.createElement("a");
        a.href = url.href;
        a.textContent = m[0];
        a.target = "_blank";
        a.rel = "noopener noreferrer nofollow";
        parent.appendChild(a);
      } else {
        parent.appendChild(document.createTextNode(m[0]));
      }
      last = m.index + m[0].length;
    }
    if (last < text.length) parent.appendChild(document.createTextNode(text.slice(last)));
  }

  function mentions(text) {
    if (!state.nick) return false;
    const escaped = state.nick.replace(/[.*+?^${}()|[\]\\\-]/g, "\\$&");
    return new RegExp("(^|[^A-Za-z0-9_\\-\\[\\]{}|^])" + escaped + "($|[^A-Za-z0-9_\\-\\[\\]{}|^])", "i").test(text);
  }

  const nearBottom = () => list.scrollHeight - list.scrollTop - list.clientHeight < 48;

  function toBottom() {
    list.scrollTop = list.scrollHeight;
    jump.hidden = true;
  }

  function clock(when) {
    return String(when.getHours()).padStart(2, "0") + ":" + String(when.getMinutes()).padStart(2, "0");
  }

  // ``when``: the time a replayed line was relayed (default: now, as it arrives).
  function addMessage(kind, nick, text, extraClass, when) {
    const atBottom = nearBottom();
    const history = extraClass === "history";
    const li = document.createElement("li");
    li.className = "msg " + kind + (extraClass ? " " + extraClass : "");
    const time = document.createElement("time");
    time.className = "time";
    const now = new Date();
    const at = when || now;
    time.dateTime = at.toISOString();
    time.textContent = clock(at);
    if (when && at.toDateString() !== now.toDateString()) {
      const day = [at.getFullYear(), at.getMonth() + 1, at.getDate()].map((n) => String(n).padStart(2, "0")).join("-");
      time.textContent = day + " " + time.textContent;
    }
    if (when) time.title = at.toLocaleString();
    li.appendChild(time);
    if (kind === "private") {
      const tag = document.createElement("span");
      tag.className = "tag";
      tag.textContent = extraClass && extraClass.includes("outgoing") ? "private to" : "private";
      li.appendChild(tag);
    }
    if (kind === "action") li.appendChild(document.createTextNode("* "));
    if (nick !== null) {
      li.appendChild(nickSpan(nick));
      li.appendChild(document.createTextNode(kind === "action" ? " " : ": "));
    }
    const body = document.createElement("span");
    body.className = "text";
    appendText(body, text);
    li.appendChild(body);
    if (!history && (kind === "chat" || kind === "action") && nick && !sameName(nick, state.nick) && mentions(text))
      li.classList.add("mention");
    list.appendChild(li);
    while (list.childElementCount > MAX_MESSAGES) list.firstElementChild.remove();
    // Reading back: stay there, and say that there is more below (history is not news).
    if (atBottom || (extraClass && extraClass.split(" ").includes("self"))) toBottom();
    else if (!history) jump.hidden = false;
  }

  function addLocal(text) {
    addMessage("notice", null, text, "local");
  }

  function renderRooms() {
    roomsEl.replaceChildren();
    const names = Array.from(state.rooms.keys()).sort((a, b) => a.toLowerCase().localeCompare(b.toLowerCase()));
    for (const name of names) {
      const li = document.createElement("li");
      if (sameRoom(name)) {
        li.className = "current";
        li.title = "Your room";
        li.setAttribute("aria-current", "true");
      }
      const label = document.createElement("span");
      label.className = "name";
      label.textContent = name;
      const count = document.createElement("span");
      count.className = "count";
      count.textContent = String(state.rooms.get(name));
      const join = sameRoom(name) ? null : () => {
        sendCommand("/join " + name);
        closeSide();
        input.focus();
      };
      entry(li, [label, count], "Join " + name, join);
      roomsEl.appendChild(li);
    }
  }

  function renderMembers() {
    membersEl.replaceChildren();
    const names = state.members.slice().sort((a, b) => a.toLowerCase().localeCompare(b.toLowerCase()));
    for (const name of names) {
      const li = document.createElement("li");
      const me = sameName(name, state.nick);
      if (me) li.classList.add("me");
      if (me) entry(li, [nickSpan(name, false)], "Change your nickname", startRename);
      else entry(li, [nickSpan(name, false)], "Send a private message to " + name, () => startPrivate(name));
      membersEl.appendChild(li);
    }
    $("member-count").textContent = names.length ? "(" + names.length + ")" : "";
  }

  // Your name (in the header, or yourself in the member list): the box gets "/nick NAME"
  // with the name selected, so that typing the new one and Enter changes it.
  function startRename() {
    input.value = "/nick " + state.nick;
    maskSecret();
    input.focus();
    input.setSelectionRange(6, input.value.length);
    closeSide();
  }

  function startPrivate(nick) {
    if (sameName(nick, state.nick)) return;
    input.value = "/msg " + nick + " ";
    maskSecret();
    input.focus();
    closeSide();
  }

  // -------------------------------------------------------------------------- input

  // Lines that carry a password (/register, /login, /password): never kept in the input
  // history, never shown back, and masked while typed (everything after "/login NICK ",
  // "/register " or "/password " shows as dots).
  const SECRET_LINE_RE = /^\s*\/(register|login|password)(\s|$)/i;
  const SECRET_PART_RE = /^(\s*\/(?:login\s+\S+\s|register\s|password\s))([\s\S]*)$/i;
  const mask = $("input-mask");

  function isSecretLine(line) {
    return SECRET_LINE_RE.test(line);
  }

  function maskSecret() {
    const m = SECRET_PART_RE.exec(input.value);
    if (!m) {
      if (!mask.hidden) {
        mask.hidden = true;
        mask.textContent = "";
        input.classList.remove("secret");
        input.spellcheck = true;
      }
      return;
    }
    mask.textContent = m[1] + m[2].replace(/\S/g, "\u2022");
    mask.hidden = false;
    input.classList.add("secret");
    input.spellcheck = false; // a spell checker may send what it checks elsewhere
    mask.scrollLeft = input.scrollLeft;
  }

  function sendCommand(line) {
    if (!sendLine(line)) {
      const shown = isSecretLine(line) ? "your " + line.trim().split(/\s+/)[0] + " line" : "\u201c" + line + "\u201d";
      addMessage("error", null, "Not connected: " + shown + " was not sent.");
      return false;
    }
    return true;
  }

  function submit(line) {
    if (!line.trim()) return;
    if (!sendCommand(line)) return;
    remember(line);
    const trimmed = line.trim();
    if (trimmed === "exit" || /^\/quit(\s|$)/i.test(trimmed)) {
      state.userQuit = true;
      return;
    }
    // The server never sends our own chat lines back: show them here.
    if (line.startsWith("//")) {
      addMessage("chat", state.nick, line.slice(1), "self");
    } else if (!line.startsWith("/")) {
      addMessage("chat", state.nick, line, "self");
    } else {
      const me = /^\/me\s+([\s\S]+)$/i.exec(line);
      if (me) addMessage("action", state.nick, me[1], "self");
    }
  }

  function remember(line) {
    if (isSecretLine(line)) {
      state.historyPos = -1;
      state.draft = "";
      return;
    }
    if (state.history[state.history.length - 1] !== line) state.history.push(line);
    if (state.history.length > MAX_HISTORY) state.history.shift();
    state.historyPos = -1;
    state.draft = "";
  }

  function historyStep(direction) {
    const h = state.history;
    if (!h.length) return;
    if (state.historyPos === -1) {
      if (direction > 0) return;
      state.draft = isSecretLine(input.value) ? "" : input.value;
      state.historyPos = h.length - 1;
    } else {
      state.historyPos += direction;
      if (state.historyPos >= h.length) {
        state.historyPos = -1;
        input.value = state.draft;
        maskSecret();
        return;
      }
      if (state.historyPos < 0) state.historyPos = 0;
    }
    input.value = h[state.historyPos];
    maskSecret();
    requestAnimationFrame(() => input.setSelectionRange(input.value.length, input.value.length));
  }

  function complete() {
    // Tab: complete a nickname (or a /command at the start).
    const pos = input.selectionStart;
    const before = input.value.slice(0, pos);
    const m = /(\S+)$/.exec(before);
    if (!m) return false;
    const word = m[1];
    let choices;
    if (word.startsWith("/") && m.index === 0) {
      choices = ["/nick ", "/join ", "/rooms", "/who", "/msg ", "/me ", "/stats", "/help", "/quit", "/register ", "/login ", "/logout", "/password "];
    } else {
      const stem = word.replace(/^@/, "");
      choices = state.members.filter((n) => !sameName(n, state.nick)).map((n) => (word.startsWith("@") ? "@" : "") + n + (m.index === 0 ? ": " : " "));
      if (!stem) return false;
    }
    const found = choices.find((c) => c.toLowerCase().startsWith(word.toLowerCase()));
    if (!found) return false;
    input.value = before.slice(0, m.index) + found + input.value.slice(pos);
    const caret = m.index + found.length;
    input.setSelectionRange(caret, caret);
    maskSecret();
    return true;
  }

  $("send-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const line = input.value;
    if (!line.trim()) return;
    if (!state.ws || state.ws.readyState !== WebSocket.OPEN) {
      addMessage("error", null, "Not connected yet: your line is kept in the box.");
      return;
    }
    submit(line);
    input.value = "";
    maskSecret();
    input.focus(); // after the Send button (by keyboard): the next line goes in the box
  });

  // A click or tap on Send leaves the focus in the box: the next line can be typed at once,
  // and a phone's keyboard does not fold away after every message.
  $("send").addEventListener("mousedown", (event) => event.preventDefault());

  input.addEventListener("input", maskSecret);
  // The box scrolls its text sideways when the line is longer than it: the mask follows.
  for (const name of ["keyup", "select", "scroll", "click"]) input.addEventListener(name, () => (mask.scrollLeft = input.scrollLeft));

  input.addEventListener("keydown", (event) => {
    if (event.key === "ArrowUp" && !event.shiftKey) {
      event.preventDefault();
      historyStep(-1);
    } else if (event.key === "ArrowDown" && !event.shiftKey) {
      event.preventDefault();
      historyStep(1);
    } else if (event.key === "Tab" && !event.shiftKey && input.value) {
      if (complete()) event.preventDefault();
    }
  });

  $("join-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const field = $("join-input");
    const room = field.value.trim();
    if (!room) return;
    if (sendCommand("/join " + room)) field.value = "";
    closeSide();
    input.focus();
  });

  $("refresh").addEventListener("click", quietRefresh);
  $("nick-name").addEventListener("click", () => state.nick && startRename());

  list.addEventListener("scroll", () => {
    if (!jump.hidden && nearBottom()) jump.hidden = true;
  });
  jump.addEventListener("click", () => {
    toBottom();
    input.focus();
  });

  $("reconnect-now").addEventListener("click", () => {
    state.attempts = 0;
    connect();
  });

  const toggle = $("toggle-side");
  function closeSide() {
    app.classList.remove("side-open");
    toggle.setAttribute("aria-expanded", "false");
  }
  toggle.addEventListener("click", () => {
    const open = app.classList.toggle("side-open");
    toggle.setAttribute("aria-expanded", String(open));
  });
  list.addEventListener("click", closeSide);
  // The open drawer (on a phone) dims the page behind it; a tap there, or Escape, closes it.
  $("backdrop").addEventListener("click", closeSide);
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && app.classList.contains("side-open")) {
      closeSide();
      toggle.focus();
    }
  });

  // Back online or back to the tab: try at once instead of waiting for the backoff.
  window.addEventListener("online", () => {
    if (!state.ws && !state.userQuit) connect();
  });
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "visible" && !state.ws && !state.userQuit && state.timer) connect();
  });

  state.refreshTimer = setInterval(() => {
    if (document.visibilityState === "visible" && state.ws && state.ws.readyState === WebSocket.OPEN) quietRefresh();
  }, REFRESH_EVERY);

  connect();
  input.focus();
})();
