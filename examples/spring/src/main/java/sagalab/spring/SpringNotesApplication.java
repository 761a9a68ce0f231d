package sagalab.spring;

import org.springframework.boot.SpringApplication;
import org.springframework.boot.autoconfigure.SpringBootApplication;

@SpringBootApplication
public class SpringNotesApplication {
    public static void main(String[] args) {
        SpringApplication.run(SpringNotesApplication.class, args);
    }
}
