// The app: logs in with WeChat on launch (utils/login.js); a WeChat user not yet linked to an
// account is sent to the bind page.
const login = require('./utils/login.js')
const api = require('./utils/api.js')

App({
  onLaunch: function () {
    login.launch().then(null, function (err) {
      // The first page shows its own state; this says why it has nothing to show.
      wx.showToast({ title: api.messageOf(err), icon: 'none', duration: 3000 })
    })
  },
})
