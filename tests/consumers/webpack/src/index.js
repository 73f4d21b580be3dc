// A user's code: the package by its name, nothing copied, no webpack option for it.
import { StableDiffusion } from "sd-webgpu";
import { consumer } from "./consumer.js";

window.consumer = consumer(StableDiffusion, "webpack");
