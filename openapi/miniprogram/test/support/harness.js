// A stand-in for WeChat around the real app and pages: storage in memory, navigation between
// pages rendered by miniprogram-simulate (the page stack, reLaunch, navigateTo, back, tabs),
// toasts and modals recorded, wx.scanCode stubbed, and wx.request / wx.login supplied by the
// test (scripted, or bridged to a real server).
const path = require('path')
const simulate = require('miniprogram-simulate')

const ROOT = path.resolve(__dirname, '../..')

function clone(value) {
  return value === undefined ? undefined : JSON.parse(JSON.stringify(value))
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms))
}

// Polls `check` until it returns something truthy; fails with `what` and the last page text
// after `timeoutMs`.
async function waitFor(check, what, timeoutMs, describe) {
  const deadline = Date.now() + (timeoutMs || 10000)
  let last
  for (;;) {
    try {
      last = await check()
      if (last) return last
    } catch (err) {
      last = err
    }
    if (Date.now() > deadline) {
      const context = describe ? `\n${describe()}` : ''
      throw new Error(`timed out waiting for ${what} (last: ${last})${context}`)
    }
    await sleep(25)
  }
}

function parseUrl(url) {
  const [route, search] = url.split('?')
  const query = {}
  if (search) {
    search.split('&').forEach((pair) => {
      const [key, value] = pair.split('=')
      query[decodeURIComponent(key)] = decodeURIComponent(value || '')
    })
  }
  return { route: route.startsWith('/') ? route : `/${route}`, query }
}

// One rendered page and what a user can do on it.
class Page {
  constructor(route, query, component, phone) {
    this.route = route
    this.query = query
    this.component = component
    this.phone = phone
  }

  get instance() {
    return this.component.instance
  }

  get data() {
    return this.component.instance.data
  }

  node(selector) {
    const node = this.component.querySelector(selector)
    if (!node) throw new Error(`${this.route} has no ${selector}:\n${this.text()}`)
    return node
  }

  has(selector) {
    return Boolean(this.component.querySelector(selector))
  }

  // What the user reads: the whole page, or one element.
  text(selector) {
    if (!selector) return this.component.dom.textContent.replace(/\s+/g, ' ').trim()
    const node = this.component.querySelector(selector)
    return node ? node.dom.textContent.replace(/\s+/g, ' ').trim() : null
  }

  type(selector, value) {
    this.node(selector).dispatchEvent('input', { detail: { value } })
  }

  tap(selector) {
    this.node(selector).dispatchEvent('tap')
  }

  // A <switch> flipped by the user.
  toggle(selector, value) {
    this.node(selector).dispatchEvent('change', { detail: { value } })
  }

  // Calls a lifecycle method as WeChat would (onPullDownRefresh, onShow), recording failures.
  lifecycle(name, arg) {
    const method = this.instance[name]
    if (typeof method !== 'function') return Promise.resolve()
    return this.phone.track(Promise.resolve().then(() => method.call(this.instance, arg)))
  }

  waitForText(selector, expected, timeoutMs) {
    const matches = (text) => (expected instanceof RegExp ? expected.test(text) : text.includes(expected))
    return waitFor(
      () => {
        const text = this.text(selector)
        return text !== null && matches(text)
      },
      `${this.route} ${selector || 'page'} to show ${expected}`,
      timeoutMs,
      () => `page text: ${this.text()}`
    )
  }
}

let appDefinition = null

// Each page is loaded once per test file and rendered afresh each time it opens: its script
// runs once under jest's module registry, as it does once per app in WeChat.
const pageIds = {}
function pageId(route) {
  if (!pageIds[route]) pageIds[route] = simulate.load(path.join(ROOT, route), { rootPath: ROOT })
  return pageIds[route]
}

// A phone running the mini program: storage, the page stack and the recorded UI.
class Phone {
  constructor(options) {
    this.storage = {}
    this.stack = []
    this.toasts = []
    this.modals = []
    this.failures = []
    this.confirmModals = true
    this.scanResult = null
    this.request = options.request
    this.login = options.login
    this.install()
  }

  install() {
    const phone = this
    Object.assign(global.wx, {
      getStorageSync(key) {
        return Object.prototype.hasOwnProperty.call(phone.storage, key) ? clone(phone.storage[key]) : ''
      },
      setStorageSync(key, value) {
        phone.storage[key] = clone(value)
      },
      removeStorageSync(key) {
        delete phone.storage[key]
      },
      request(options) {
        return phone.request(options)
      },
      login(options) {
        return phone.login(options)
      },
      showToast(options) {
        phone.toasts.push(options.title)
        if (options.success) options.success({ errMsg: 'showToast:ok' })
      },
      showModal(options) {
        phone.modals.push(options.title)
        const confirm = phone.confirmModals
        setTimeout(() => options.success && options.success({ confirm, cancel: !confirm }), 0)
      },
      scanCode(options) {
        setTimeout(() => {
          if (phone.scanResult === null) options.fail && options.fail({ errMsg: 'scanCode:fail cancel' })
          else options.success && options.success({ result: phone.scanResult, scanType: 'QR_CODE' })
        }, 0)
      },
      reLaunch(options) {
        phone.closeAll()
        phone.open(options.url)
        if (options.success) options.success({})
      },
      switchTab(options) {
        phone.closeAll()
        phone.open(options.url)
        if (options.success) options.success({})
      },
      redirectTo(options) {
        phone.close(phone.stack.pop())
        phone.open(options.url)
        if (options.success) options.success({})
      },
      navigateTo(options) {
        phone.open(options.url)
        if (options.success) options.success({})
      },
      navigateBack(options) {
        const delta = (options && options.delta) || 1
        if (phone.stack.length <= delta) {
          if (options && options.fail) options.fail({ errMsg: 'navigateBack:fail cannot navigate back at first page.' })
          return
        }
        for (let i = 0; i < delta; i++) phone.close(phone.stack.pop())
        phone.current().lifecycle('onShow')
        if (options && options.success) options.success({})
      },
      stopPullDownRefresh() {},
      setNavigationBarTitle(options) {
        phone.title = options.title
      },
    })
  }

  // Records a page's async work so a test can fail on an error nobody handled.
  track(promise) {
    return promise.then(null, (err) => {
      this.failures.push(err)
    })
  }

  open(url) {
    const { route, query } = parseUrl(url)
    const id = pageId(route)
    const component = simulate.render(id)
    component.attach(document.createElement('parent-wrapper'))
    const page = new Page(route, query, component, this)
    this.stack.push(page)
    page.lifecycle('onLoad', query).then(() => page.lifecycle('onShow'))
    return page
  }

  close(page) {
    if (page) page.component.detach()
  }

  closeAll() {
    while (this.stack.length) this.close(this.stack.pop())
  }

  current() {
    return this.stack[this.stack.length - 1]
  }

  // WeChat's launch: the App's onLaunch, then the first page of app.json. app.js runs once
  // per test file (its modules are shared with the pages, as in WeChat); each launch calls
  // its onLaunch again.
  launch() {
    if (!appDefinition) {
      global.App = (options) => { appDefinition = options }
      global.getApp = () => appDefinition
      require(path.join(ROOT, 'app.js'))
    }
    appDefinition.onLaunch({ path: 'pages/devices/devices', query: {} })
    const first = require(path.join(ROOT, 'app.json')).pages[0]
    this.open(`/${first}`)
  }

  // Waits until the page on top is `route`, and returns it.
  async on(route, timeoutMs) {
    await waitFor(
      () => this.current() && this.current().route === route,
      `the page ${route}`,
      timeoutMs,
      () => `on ${this.current() && this.current().route}: ${this.current() && this.current().text()}; toasts: ${this.toasts}`
    )
    return this.current()
  }
}

module.exports = { Phone, Page, waitFor, sleep, ROOT }
