from app.settings import Settings
from worker.main import start_worker

start_worker(Settings())
