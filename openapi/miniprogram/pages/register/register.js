// The register page: a username (its rules shown), a password typed twice, and a nickname that
// WeChat can fill in (<input type="nickname">); the account is created and linked at once.
const login = require('../../utils/login.js')
const api = require('../../utils/api.js')

Component({
  data: {
    username: '',
    password: '',
    password2: '',
    nickname: '',
    error: '',
    busy: false,
  },

  methods: {
    onUsername: function (e) {
      this.setData({ username: e.detail.value, error: '' })
    },

    onPassword: function (e) {
      this.setData({ password: e.detail.value, error: '' })
    },

    onPassword2: function (e) {
      this.setData({ password2: e.detail.value, error: '' })
    },

    // The nickname keyboard fills the field without an input event on some phones; a change
    // (blur) event carries the same value.
    onNickname: function (e) {
      this.setData({ nickname: e.detail.value })
    },

    onSubmit: async function () {
      if (this.data.busy) return
      const username = this.data.username.trim()
      if (!username || !this.data.password) {
        this.setData({ error: '请输入用户名和密码' })
        return
      }
      if (this.data.password !== this.data.password2) {
        this.setData({ error: '两次输入的密码不一致' })
        return
      }
      this.setData({ busy: true, error: '' })
      try {
        await login.register(username, this.data.password, this.data.nickname.trim())
        login.goHome()
      } catch (err) {
        this.setData({ error: api.messageOf(err) })
      } finally {
        this.setData({ busy: false })
      }
    },

    goBind: function () {
      wx.navigateBack({
        fail: function () { wx.redirectTo({ url: '/pages/bind/bind' }) },
      })
    },
  },
})
