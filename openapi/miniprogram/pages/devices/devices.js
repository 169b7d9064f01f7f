// The home page: the user's devices, each with its online state and when it last reported.
// Loads when shown (so a claim or unclaim elsewhere shows on return) and on pull-down.
const api = require('../../utils/api.js')
const format = require('../../utils/format.js')
const login = require('../../utils/login.js')
const session = require('../../utils/session.js')
const ui = require('../../utils/ui.js')

function row(device) {
  return {
    id: device.id,
    title: device.name || device.serial,
    online: device.online,
    seen: device.last_seen_at ? '最后上报 ' + format.ago(device.last_seen_at) : '从未上线',
  }
}

Component({
  data: {
    loaded: false,
    loggedOut: false,
    devices: [],
    error: '',
  },

  methods: {
    onShow: function () {
      return this.load()
    },

    onPullDownRefresh: async function () {
      await this.load()
      wx.stopPullDownRefresh()
    },

    load: async function () {
      // The launch login may still be going on when this first page shows.
      await login.ready()
      if (session.isLoggedOut()) {
        this.setData({ loggedOut: true, loaded: false, devices: [] })
        return
      }
      if (!session.get()) return
      try {
        const answer = await api.request({ path: '/api/v1/devices' })
        this.setData({ loggedOut: false, loaded: true, devices: answer.items.map(row), error: '' })
      } catch (err) {
        if (!api.isQuiet(err)) this.setData({ error: api.messageOf(err) })
      }
    },

    onLogin: async function () {
      try {
        const answer = await login.logIn()
        if (answer.status === 'bind_required') {
          login.goToBind()
          return
        }
        this.setData({ loggedOut: false })
        await this.load()
      } catch (err) {
        ui.toastError(err)
      }
    },

    goClaim: function () {
      wx.navigateTo({ url: '/pages/claim/claim' })
    },

    openDevice: function (e) {
      wx.navigateTo({ url: '/pages/device/device?id=' + e.currentTarget.dataset.id })
    },
  },
})
