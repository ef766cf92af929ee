"""The Air worker: one process per active channel, running that channel's ffmpeg."""
