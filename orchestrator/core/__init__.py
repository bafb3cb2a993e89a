"""The pure decision core: definitions and machine files, saga state, `decide()`. No I/O imports."""
