// Token storage: wx.request has no cookies, so the access and refresh tokens, the user, and a
// pending bind ticket live in the mini program's storage, under keys of our own.
const SESSION_KEY = 'iotbind.session'
const TICKET_KEY = 'iotbind.bindTicket'
const LOGGED_OUT_KEY = 'iotbind.loggedOut'

function read(key) {
  try {
    const value = wx.getStorageSync(key)
    return value === '' ? null : value
  } catch (err) {
    // Storage can fail (quota, a corrupt entry): treat it as empty rather than crash a page.
    return null
  }
}

function write(key, value) {
  try {
    wx.setStorageSync(key, value)
  } catch (err) {
    // Keeping the session in memory would hide the failure until the next launch; better to
    // surface it where it is noticed.
    console.error('storage write failed', key, err)
  }
}

function remove(key) {
  try {
    wx.removeStorageSync(key)
  } catch (err) {
    console.error('storage remove failed', key, err)
  }
}

// The current pair, or null: {access_token, refresh_token, user}.
function get() {
  const session = read(SESSION_KEY)
  return session && session.access_token ? session : null
}

// Stores an `authenticated` answer of the API (login, bind, register, refresh).
function save(authenticated) {
  const previous = get()
  write(SESSION_KEY, {
    access_token: authenticated.access_token,
    refresh_token: authenticated.refresh_token,
    user: authenticated.user || (previous && previous.user) || null,
  })
  remove(TICKET_KEY)
  remove(LOGGED_OUT_KEY)
}

function saveUser(user) {
  const session = get()
  if (session) write(SESSION_KEY, Object.assign({}, session, { user: user }))
}

function clear() {
  remove(SESSION_KEY)
}

// The bind ticket of a `bind_required` login, with when it stops working (ms since epoch).
function saveBindTicket(ticket, expiresIn) {
  write(TICKET_KEY, { ticket: ticket, expires_at: Date.now() + expiresIn * 1000 })
}

function bindTicket() {
  const stored = read(TICKET_KEY)
  return stored && stored.ticket ? stored.ticket : null
}

// After "log out" the app must not log straight back in with WeChat on the next launch.
function markLoggedOut() {
  clear()
  remove(TICKET_KEY)
  write(LOGGED_OUT_KEY, true)
}

function isLoggedOut() {
  return read(LOGGED_OUT_KEY) === true
}

module.exports = {
  get, save, saveUser, clear, saveBindTicket, bindTicket, markLoggedOut, isLoggedOut,
}
