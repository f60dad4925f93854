"""Development tooling: the local stack (emulator, provisioning, `chalice local`).

Never imported by the app and never deployed.
"""
