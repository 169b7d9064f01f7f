// The bind page: an existing account's username and password link this WeChat user to it.
// Wrong passwords are answered in place; a lockout (429 with Retry-After) counts down.
const login = require('../../utils/login.js')
const api = require('../../utils/api.js')

Component({
  data: {
    username: '',
    password: '',
    error: '',
    retryIn: 0,
    busy: false,
  },

  lifetimes: {
    detached: function () {
      this.stopCountdown()
    },
  },

  methods: {
    onUsername: function (e) {
      this.setData({ username: e.detail.value, error: '' })
    },

    onPassword: function (e) {
      this.setData({ password: e.detail.value, error: '' })
    },

    onSubmit: async function () {
      if (this.data.busy || this.data.retryIn > 0) return
      const username = this.data.username.trim()
      if (!username || !this.data.password) {
        this.setData({ error: '请输入用户名和密码' })
        return
      }
      this.setData({ busy: true, error: '' })
      try {
        await login.bind(username, this.data.password)
        login.goHome()
      } catch (err) {
        this.setData({ error: api.messageOf(err), password: '' })
        if (err.code === 'too_many_attempts' && err.retryAfter) this.startCountdown(err.retryAfter)
      } finally {
        this.setData({ busy: false })
      }
    },

    goRegister: function () {
      wx.navigateTo({ url: '/pages/register/register' })
    },

    startCountdown: function (seconds) {
      this.stopCountdown()
      this.setData({ retryIn: seconds })
      this.timer = setInterval(() => {
        const left = this.data.retryIn - 1
        this.setData({ retryIn: left > 0 ? left : 0 })
        if (left <= 0) {
          this.stopCountdown()
          this.setData({ error: '' })
        }
      }, 1000)
    },

    stopCountdown: function () {
      if (this.timer) clearInterval(this.timer)
      this.timer = null
    },
  },
})
