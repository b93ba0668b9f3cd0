"""Authenticate callers and record what they do (issue 6, SPEC "Auth").

One concept per module; this package file imports none of them, because the store's
interface imports `models`:

- `models`: roles, users, API tokens, audit records, principals (plain values)
- `errors`: the authentication errors, below SocmethError
- `names`: the rule for user and token names
- `passwords`: argon2id hashing, verifying and the password rule
- `access_tokens`: issuing and verifying the HS256 JWTs that login returns
- `api_tokens`: long-lived tokens for automation (`smt_...`), stored as SHA-256
- `secret`: the JWT signing secret: from config, or generated in the data dir
- `ratelimit`: the login rate limiter, a pure function of `now`
- `users`: adding, listing, changing and removing users (the CLI, later the API)
- `audit`: writing an audit record
- `authenticator`: login, HTTP Basic and Bearer credentials into a `Principal`
- `memory`: an in-process `AuthStore` for tests
"""
