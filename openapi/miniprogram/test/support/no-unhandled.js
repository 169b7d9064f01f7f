// Fails a test whose code left a promise rejected with nobody handling it: a page's tap
// handler that throws, say. The app must never leave one.
const unhandled = []
const listener = (reason) => unhandled.push(reason)

beforeAll(() => process.on('unhandledRejection', listener))
afterAll(() => process.removeListener('unhandledRejection', listener))

afterEach(async () => {
  // Rejections are reported after the microtask queue drains.
  await new Promise((resolve) => setTimeout(resolve, 20))
  const found = unhandled.splice(0)
  expect(found.map(String)).toEqual([])
})
